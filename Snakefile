# The NAS pipeline: data -> search -> select -> retrain (-> transfer, latency) -> tables, plus pictures and plots.
#   snakemake --cores 2 --configfile config/demo.yaml            (everything: the default target)
#   snakemake --configfile config/demo.yaml --report results/report.html
from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/retrain.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/latency.smk"
include: "workflow/rules/report.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        table_path(config["dataset"]),
        report_figures(config["dataset"]),
        transfer_targets(),
