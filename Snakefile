# The NAS pipeline: data -> search -> select -> retrain (-> transfer) -> tables.
#   snakemake --cores 2 --configfile config/demo.yaml results/tables/cifar10.csv
from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/retrain.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/latency.smk"


rule all:
    default_target: True
    input:
        table_path(config["dataset"]),
        transfer_targets(),
