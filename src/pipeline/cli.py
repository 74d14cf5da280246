"""pipeline <stage>: command-line front ends of the NAS pipeline's stage libraries.

Each stage takes its parameters as --params-file FILE (what Snakemake and DVC pass: the
job's own parameters file, written by `pipeline params` or the Snakefile), as --params
JSON, or as --config FILE [--config FILE ...] plus the job keys (what people use).
Exit codes: 0 done; 2 an error, printed as one line naming the culprit (config key, file,
output path) and caught before any work where it can be; 75 a search, PT selection,
retrain or transfer stopped by SIGTERM/SIGUSR1 (SLURM's time limit or preemption) after
writing its checkpoint; 130 the same after Ctrl-C (SIGINT). Rerun the same command to
resume from the checkpoint; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from pipeline.config import check_threads, load_config, stage_params, transfer_block, validate_stage_params
from pipeline.errors import ConfigError, UserError


def _add_params(parser: argparse.ArgumentParser, *keys: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--params", help="the stage's parameters as JSON")
    source.add_argument("--params-file", help="the stage's parameters as a JSON file (as Snakemake and DVC pass them)")
    source.add_argument("--config", action="append", help="config YAML; repeat to overlay files in order")
    parser.add_argument("--dataset", help="data entry to use (default: the config's 'dataset')")
    if "method" in keys:
        parser.add_argument("--method", help="method name under the config's methods (with --config)")
    if "seed" in keys:
        parser.add_argument("--seed", type=int, help="seed (with --config)")


def _config(args: argparse.Namespace) -> dict:
    """The merged, validated config files, read once per command."""
    if getattr(args, "loaded_config", None) is None:
        args.loaded_config = load_config(args.config)
    return args.loaded_config


def _threads(args: argparse.Namespace) -> int:
    """The launch's thread count; a job's ``runtime.threads`` wins over it (runtime.configure)."""
    if check_threads(args.threads) is not None:
        return args.threads
    return _config(args)["runtime"]["threads"] if args.config else 0


def _params(args: argparse.Namespace, stage: str) -> dict:
    if args.params_file is not None:
        try:
            text = Path(args.params_file).read_text()
        except OSError as exc:
            raise ConfigError(f"--params-file {args.params_file}: {exc.strerror}") from None
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--params-file {args.params_file}: not valid JSON ({exc.msg})") from None
        return validate_stage_params(stage, params)
    if args.params is not None:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--params: not valid JSON ({exc.msg})") from None
        return validate_stage_params(stage, params)
    config = _config(args)
    default = transfer_block(config)["dataset"] if stage == "transfer" else config["dataset"]
    keys = {"dataset": args.dataset or default}
    if stage in ("search", "select"):
        section = config[stage]["methods"]
        if args.method not in section:
            raise ConfigError(f"--method: {args.method!r} is not under '{stage}.methods' (known: {', '.join(section)})")
        keys["method"] = args.method
    if stage in ("search", "select", "retrain", "transfer", "latency"):
        if args.seed is None:
            raise ConfigError("--seed: required with --config")
        keys["seed"] = args.seed
    if keys["dataset"] not in config["data"]:
        raise ConfigError(f"--dataset: {keys['dataset']!r} has no entry under 'data'")
    if stage.startswith("latency") and "latency" not in config:
        raise ConfigError("config key 'latency': required for the latency stages")
    params = stage_params(config, stage, **keys)
    if check_threads(getattr(args, "threads", None)) is not None and "threads" in params.get("runtime", {}):
        params["runtime"]["threads"] = args.threads  # the command line's count, recorded with the job
    return params


def cmd_data(args):
    from pipeline.stages.data import prepare_dataset

    meta = prepare_dataset(_params(args, "data"), args.out)
    print(f"wrote {args.out}: {meta['sizes']['train']} train / {meta['sizes']['test']} test images, {meta['num_classes']} classes")


def cmd_search(args):
    from pipeline.search.run import run_search
    from pipeline.training.signals import stop_on_signal

    params = _params(args, "search")
    with stop_on_signal():
        path = run_search(params, args.data, args.out_dir, threads=_threads(args))
    print(f"wrote {path}")


def cmd_select(args):
    from pipeline.select.run import run_select
    from pipeline.training.signals import stop_on_signal

    params = _params(args, "select")
    with stop_on_signal():  # PT checkpoints after each step and stops there
        run_select(params, args.supernet, args.data, args.out, threads=_threads(args), decisions_out=args.decisions)
    print(f"wrote {args.out}")


def cmd_retrain(args):
    from pipeline.runtime import is_main_process
    from pipeline.stages.retrain import run_retrain
    from pipeline.training.signals import stop_on_signal

    params = _params(args, "retrain")
    with stop_on_signal():
        summary = run_retrain(params, args.genotype, args.data, args.out_dir, threads=_threads(args))
    if is_main_process():
        print(f"test accuracy {summary['test_acc']:.2f}%, {summary['params_m']:.3f}M parameters")


def cmd_transfer(args):
    from pipeline.runtime import is_main_process
    from pipeline.stages.transfer import run_transfer
    from pipeline.training.signals import stop_on_signal

    params = _params(args, "transfer")
    with stop_on_signal():
        summary = run_transfer(params, args.genotype, args.out_dir, threads=_threads(args))
    if is_main_process():
        print(
            f"top-1 {summary['test_top1']:.2f}%, top-5 {summary['test_top5']:.2f}%, C={summary['init_channels']}, "
            f"{summary['params_m']:.3f}M parameters, {summary['multiply_adds_m']:.1f}M multiply-adds"
        )


def cmd_tables(args):
    from pipeline.stages.tables import run_tables

    if not args.metrics and not args.genotypes:
        raise ConfigError("tables: give retrain (or transfer) metrics files, or --genotypes of benchmark-judged cells")
    table = run_tables(
        _params(args, "tables"), args.metrics, args.out, latency=args.latency, metrics_out=args.metrics_out, genotype_paths=args.genotypes
    )
    print(table.to_string(index=False))


def cmd_latency(args):
    from pipeline.stages.latency import run_latency

    if check_threads(args.threads) is not None:
        import torch

        torch.set_num_threads(args.threads)
    record = run_latency(_params(args, "latency"), args.genotype, args.out, data_path=args.data)
    print(f"wrote {args.out}: {record['latency_ms']:.3f} ms ({record['method']})")


def cmd_latency_filter(args):
    from pipeline.stages.latency import run_latency_filter

    summary = run_latency_filter(_params(args, "latency_filter"), args.latency, args.out)
    for entry in summary["results"]:
        verdict = "kept" if entry["passed"] else "dropped"
        print(f"{verdict:8s}{entry['latency_ms']:10.3f} ms  {entry['genotype_file']}")
    print(f"target {summary['target_ms']} ms: kept {len(summary['kept'])} of {len(summary['results'])}")


def cmd_check_config(args):
    config = load_config(args.config)
    print(f"config OK: dataset {config['dataset']}, search {config['search']['run']}, select {config['select']['run']}")


def cmd_check_gpu(args):
    import torch

    from pipeline.config import deep_merge, read_yaml
    from pipeline.gpus import check_gpu_build

    config: dict = {}  # only its cluster section matters: no data need be here
    for path in args.config or []:
        config = deep_merge(config, read_yaml(path))
    try:
        print(check_gpu_build(config, torch.cuda.get_arch_list(), torch.__version__, gpu_model=args.gpu_model))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def cmd_params(args):
    from pipeline.planning.jobs import write_job_files

    config = load_config(args.config)
    if args.dvc_yaml:  # checked first: a refused run writes nothing
        from pipeline.planning.dvc import render_dvc_yaml

        path = Path(args.dvc_yaml)
        if not path.is_file() or path.read_text() != render_dvc_yaml(args.config):
            configs = " ".join(f"--config {name}" for name in args.config)
            raise ConfigError(
                f"{path} lists another job set or stages than the config files: refresh it with "
                f"`pipeline dvc-yaml {configs} --out {path}`, then run `dvc repro` again"
            )
    written = write_job_files(config)
    print(f"parameters and code files up to date ({len(written)} written)")


def cmd_jobs(args):
    from pipeline.planning.jobs import jobs, kind_graph

    config = load_config(args.config)
    if args.graph:
        kinds = kind_graph(jobs(config))
        width = max(len(entry.kind) for entry in kinds)
        print("every job also reads its parameters file and its stage's code file (DVC stage 'params')")
        for entry in kinds:
            inputs = entry.reads + entry.sources
            print(f"{entry.kind:<{width}}  {len(entry.names):>3} job{'s' if len(entry.names) != 1 else ' '}"
                  + (f"  <- {', '.join(inputs)}" if inputs else ""))
        return
    producers = {out: job for job in jobs(config) for out in job.outs}
    for job in jobs(config):
        upstream = sorted({producers[dep].dvc_name for dep in job.deps if dep in producers})
        print(f"{job.dvc_name}" + (f"  <- {', '.join(upstream)}" if upstream else ""))


def cmd_status(args):
    from pipeline.planning.status import dvc_status

    if not (Path(args.repo) / "dvc.yaml").is_file():
        raise UserError(f"--repo {args.repo}: no dvc.yaml there; give the project folder")
    print("\n".join(dvc_status(args.repo)))


def cmd_dvc_yaml(args):
    from pipeline.planning.dvc import render_dvc_yaml

    text = render_dvc_yaml(args.config)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)


def cmd_show_genotype(args):
    from pipeline.artifacts import read_genotype
    from pipeline.spaces import get_space
    from pipeline.views.display import genotype_ascii

    genotype = read_genotype(args.genotype)
    print(get_space(genotype["space"]).to_text(genotype["cells"]))
    if not args.text_only:
        print()
        print(genotype_ascii(genotype))


def cmd_show_table(args):
    from pipeline.artifacts import read_table
    from pipeline.views.display import table_text

    print(table_text(read_table(args.table), all_columns=args.all))


def cmd_draw_genotype(args):
    from pipeline.artifacts import read_genotype
    from pipeline.views.pictures import render_genotype

    used = render_genotype(read_genotype(args.genotype), args.out, renderer=args.renderer)
    print(f"wrote {args.out} ({used})")


def cmd_plot(args):
    from pipeline.views.plots import plot_metrics

    for path in plot_metrics(args.metrics, args.out_dir, fmt=args.format):
        print(f"wrote {path}")


def cmd_plot_decisions(args):
    from pipeline.views.figures import save_figure
    from pipeline.views.plots import plot_decisions, read_decision_steps

    save_figure(plot_decisions(read_decision_steps(args.record), title=args.title or f"selection decisions: {args.record}"), args.out)
    print(f"wrote {args.out}")


def cmd_table_html(args):
    from pipeline.artifacts import read_table, write_bytes_atomic
    from pipeline.views.display import table_html

    write_bytes_atomic(args.out, table_html(read_table(args.table), title=args.title).encode())
    print(f"wrote {args.out}")


def cmd_plot_ground_truth(args):
    from pipeline.views.figures import save_figure
    from pipeline.views.plots import ground_truth_figure

    save_figure(ground_truth_figure(args.metrics, args.genotypes), args.out)
    print(f"wrote {args.out}")


def cmd_plot_latency(args):
    from pipeline.views.figures import save_figure
    from pipeline.views.plots import latency_table_figure

    save_figure(latency_table_figure(args.table), args.out)
    print(f"wrote {args.out}")


# Output options of the subcommands: (attribute, is a directory). Each is probed before
# any work starts, so an unwritable path fails in one line, not after an epoch.
OUTPUT_OPTIONS = (("out", False), ("out_dir", True), ("decisions", False), ("metrics_out", False))

DEMO = "--config config/config.yaml --config config/demo.yaml"
GENOTYPE = "results/select/cifar10/darts_1st/magnitude/seed0/genotype.json"

# name -> (one-line help, what it does, one example)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": (
        "prepare a dataset artifact",
        "Read a dataset's source (image folders, a tarball or torchvision files), take the configured "
        "class-balanced subset and write one checksummed tensor file that every later stage reads.",
        f"pipeline data {DEMO} --dataset cifar10 --out results/data/cifar10.pt",
    ),
    "search": (
        "train a supernet",
        "Run a differentiable architecture search (weights and architecture parameters) on the prepared "
        "data and write supernet.pt and metrics.h5. Checkpoints after every epoch; a rerun resumes.",
        f"pipeline search {DEMO} --method darts_1st --seed 0 --data results/data/cifar10.pt "
        "--out-dir results/search/cifar10/darts_1st/seed0",
    ),
    "select": (
        "derive a genotype from a supernet",
        "Turn a trained supernet into a discrete architecture (genotype JSON) with a selection method "
        "(magnitude, PT, train-free proxies) and write its decision record. PT checkpoints after each step.",
        f"pipeline select {DEMO} --method magnitude --seed 0 --supernet results/search/cifar10/darts_1st/seed0/supernet.pt "
        f"--data results/data/cifar10.pt --out {GENOTYPE}",
    ),
    "retrain": (
        "train the derived network from scratch",
        "Train the network a genotype describes from scratch and evaluate it on the test split; writes "
        "model.pt and metrics.h5. Checkpoints after every epoch; a rerun resumes.",
        f"pipeline retrain {DEMO} --seed 0 --genotype {GENOTYPE} --data results/data/cifar10.pt "
        "--out-dir results/retrain/cifar10/darts_1st/magnitude/seed0",
    ),
    "transfer": (
        "train a searched cell on ImageNet (mobile setting)",
        "Train the searched cells on ImageNet in the mobile setting (channels chosen within the "
        "multiply-add budget), streaming the image folders. Checkpoints after every epoch.",
        f"pipeline transfer --config config/config.yaml --seed 0 --genotype {GENOTYPE} "
        "--out-dir results/transfer/imagenet/cifar10/darts_1st/magnitude/seed0",
    ),
    "tables": (
        "aggregate retrain (or transfer) results into a table",
        "Collect the metrics of retrained (or transferred) networks into one CSV table, one row per "
        "search and selection method, with means and spreads over seeds.",
        f"pipeline tables {DEMO} --out results/tables/cifar10.csv results/retrain/cifar10/darts_1st/magnitude/seed0/metrics.h5",
    ),
    "latency": (
        "latency of a selected architecture (measured or looked up)",
        "Measure the latency of a genotype's evaluation network on this machine, or look it up in the "
        "space's latency table, and write it as JSON.",
        f"pipeline latency {DEMO} --seed 0 --genotype {GENOTYPE} --data results/data/cifar10.pt "
        "--out results/latency/cifar10/darts_1st/magnitude/seed0/latency.json",
    ),
    "latency-filter": (
        "keep the architectures within latency.target_ms",
        "Compare each latency record with latency.target_ms and write which architectures pass.",
        f"pipeline latency-filter {DEMO} --out results/latency/cifar10/filter.json "
        "results/latency/cifar10/darts_1st/magnitude/seed0/latency.json",
    ),
    "check-config": (
        "validate config files",
        "Merge the config files in order and check them against the schema and the registries; prints "
        "one line naming the bad key, or a summary.",
        f"pipeline check-config {DEMO}",
    ),
    "check-gpu": (
        "check that the installed torch has kernels for the cluster's GPU model",
        "Compare torch.cuda.get_arch_list() of the installed torch (no GPU needed) with the compute "
        "capability of cluster.gpu.gpu_model (or --gpu-model); fails with one line when the build cannot "
        "run that GPU, e.g. a CUDA 13 build on V100 nodes.",
        "pipeline check-gpu --config config/config.yaml",
    ),
    "params": (
        "write each job's parameters file and each stage's code file (results/params)",
        "Resolve the config files into one parameters file per job and one code file per stage kind "
        "(the hashes of the modules it imports), each rewritten only when its content changes; every "
        "Snakemake rule and DVC stage depends on its job's two files. With --dvc-yaml, first refuse "
        "(writing nothing) if that dvc.yaml no longer matches the config's job set.",
        f"pipeline params {DEMO}",
    ),
    "jobs": (
        "print the job graph: one job per line with the jobs it reads from",
        "List every job the config files define (as DVC names them), each with the jobs whose outputs it reads; "
        "--graph folds them by kind: one line per kind with its job count and what it reads.",
        f"pipeline jobs {DEMO}",
    ),
    "status": (
        "dvc status folded by stage kind: what is not up to date, and why",
        "One line per stage kind that DVC reports as not up to date, with how many of its stages and why "
        "(never run, parameters, code, inputs, outputs, command), read from `dvc status` and dvc.yaml.",
        "pipeline status --repo .",
    ),
    "dvc-yaml": (
        "write dvc.yaml for the given config files",
        "Render the DVC pipeline (stages, parameters, dependencies) that matches the config files.",
        f"pipeline dvc-yaml {DEMO} --out dvc.yaml",
    ),
    "show-genotype": (
        "print a genotype JSON: the space's text form and an ASCII drawing",
        "Print a genotype as its search space writes it (DARTS Genotype(...), NAS-Bench-201 string) "
        "and as an ASCII drawing of its cells.",
        f"pipeline show-genotype {GENOTYPE}",
    ),
    "show-table": (
        "print a results table CSV aligned for the terminal",
        "Print a results table with aligned columns (the main ones unless --all).",
        "pipeline show-table results/tables/cifar10.csv",
    ),
    "draw-genotype": (
        "draw a genotype's cells (or layer strip) as a picture",
        "Draw a genotype's cells (graphviz or matplotlib) as SVG, PNG or PDF.",
        f"pipeline draw-genotype {GENOTYPE} --out genotype.svg",
    ),
    "plot": (
        "plot a metrics HDF5 file: curves, and per-edge op weights of a search",
        "Plot a search's or a training's metrics: loss and accuracy curves, and for a search the "
        "weight of each op on each edge over the epochs.",
        "pipeline plot results/search/cifar10/darts_1st/seed0/metrics.h5 --out-dir plots",
    ),
    "plot-decisions": (
        "plot a selection's decision record (HDF5 or JSON)",
        "Plot the scores behind each decision a selection method took, step by step.",
        "pipeline plot-decisions results/select/cifar10/darts_1st/pt/seed0/decisions.h5 --out decisions.svg",
    ),
    "table-html": (
        "write a results table CSV as an HTML table (the report's first page)",
        "Render a results table as an HTML fragment with numeric columns right-aligned; the report embeds it first.",
        "pipeline table-html results/tables/cifar10.csv --out results/tables/cifar10.html",
    ),
    "plot-ground-truth": (
        "plot nb201 searches' per-epoch benchmark accuracy and their selections' picks",
        "Plot, per nb201 search, the NAS-Bench-201 accuracy of the cell magnitude selection would derive "
        "at each epoch, with the final picks of each selection method marked.",
        "pipeline plot-ground-truth results/search/cifar10/darts_1st_nb201/seed0/metrics.h5 --out ground_truth.svg",
    ),
    "plot-latency": (
        "plot test accuracy vs latency of a latency table, with the target",
        "Plot each architecture's test accuracy against its latency, with latency.target_ms marked.",
        "pipeline plot-latency results/tables/latency/cifar10.csv --out latency.svg",
    ),
}


def _command(sub, name: str, func) -> argparse.ArgumentParser:
    help_line, description, example = COMMANDS[name]
    parser = sub.add_parser(
        name, help=help_line, description=description, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="torch threads, at least 1 (with --config: overrides runtime.threads; with "
                        "--params/--params-file: used where the parameters name no runtime.threads)")


def build_parser() -> argparse.ArgumentParser:
    from pipeline import __version__

    parser = argparse.ArgumentParser(
        prog="pipeline", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "data", cmd_data)
    _add_params(p)
    p.add_argument("--out", required=True, help="dataset file to write")

    p = _command(sub, "search", cmd_search)
    _add_params(p, "method", "seed")
    p.add_argument("--data", required=True, help="prepared dataset file")
    p.add_argument("--out-dir", required=True, help="folder for supernet.pt, metrics.h5 and checkpoint/")
    _add_threads(p)

    p = _command(sub, "select", cmd_select)
    _add_params(p, "method", "seed")
    p.add_argument("--supernet", required=True, help="supernet.pt of a search")
    p.add_argument("--data", required=True, help="prepared dataset file the search used")
    p.add_argument("--out", required=True, help="genotype JSON to write")
    p.add_argument("--decisions", help="decision record HDF5 (default: decisions.h5 beside --out)")
    _add_threads(p)

    p = _command(sub, "retrain", cmd_retrain)
    _add_params(p, "seed")
    p.add_argument("--genotype", required=True, help="genotype JSON")
    p.add_argument("--data", required=True, help="prepared dataset file")
    p.add_argument("--out-dir", required=True, help="folder for model.pt, metrics.h5 and checkpoint/")
    _add_threads(p)

    p = _command(sub, "transfer", cmd_transfer)
    _add_params(p, "seed")
    p.add_argument("--genotype", required=True, help="genotype JSON")
    p.add_argument("--out-dir", required=True, help="folder for model.pt, metrics.h5 and checkpoint/")
    _add_threads(p)

    p = _command(sub, "tables", cmd_tables)
    _add_params(p)
    p.add_argument("--out", required=True, help="table CSV to write")
    p.add_argument("--latency", help="latency-filter output: add each row's latency and whether it passed")
    p.add_argument("--metrics-out", help="also write the table's numbers as JSON (for dvc metrics)")
    p.add_argument("metrics", nargs="*", help="retrain metrics.h5 files, or transfer ones")
    p.add_argument("--genotypes", nargs="+", action="extend", default=[],
                   help="genotype.json files of nb201 cells judged by the benchmark instead of retrained (rows without test error)")

    p = _command(sub, "latency", cmd_latency)
    _add_params(p, "seed")
    p.add_argument("--genotype", required=True, help="genotype JSON")
    p.add_argument("--data", help="prepared dataset (method 'measure': classes and image size)")
    p.add_argument("--out", required=True, help="latency JSON to write")
    p.add_argument("--threads", type=int, help="torch threads of the process, at least 1 (timing uses latency.measure.threads)")

    p = _command(sub, "latency-filter", cmd_latency_filter)
    _add_params(p)
    p.add_argument("--out", required=True, help="filter JSON to write")
    p.add_argument("latency", nargs="+", help="latency JSON files")

    p = _command(sub, "check-config", cmd_check_config)
    p.add_argument("--config", action="append", required=True, help="config YAML; repeat to overlay files in order")

    p = _command(sub, "check-gpu", cmd_check_gpu)
    p.add_argument("--config", action="append", help="config YAML; repeat to overlay files in order")
    p.add_argument("--gpu-model", help="GPU model to check instead of the config's cluster.gpu.gpu_model, e.g. v100")

    p = _command(sub, "params", cmd_params)
    p.add_argument("--config", action="append", required=True, help="config YAML; repeat to overlay files in order")
    p.add_argument("--dvc-yaml", help="also fail unless this dvc.yaml is the one `dvc-yaml` writes for the config files")

    p = _command(sub, "jobs", cmd_jobs)
    p.add_argument("--config", action="append", required=True, help="config YAML; repeat to overlay files in order")
    p.add_argument("--graph", action="store_true", help="one line per job kind with the kinds (or source files) it reads")

    p = _command(sub, "status", cmd_status)
    p.add_argument("--repo", default=".", help="the project folder, with dvc.yaml (default: here)")

    p = _command(sub, "dvc-yaml", cmd_dvc_yaml)
    p.add_argument("--config", action="append", required=True, help="config YAML; repeat to overlay files in order")
    p.add_argument("--out", help="file to write (default: standard output)")

    p = _command(sub, "show-genotype", cmd_show_genotype)
    p.add_argument("genotype")
    p.add_argument("--text-only", action="store_true", help="only the text form (DARTS Genotype(...), NB201 string)")

    p = _command(sub, "show-table", cmd_show_table)
    p.add_argument("table")
    p.add_argument("--all", action="store_true", help="every column, not just the main ones")

    p = _command(sub, "draw-genotype", cmd_draw_genotype)
    p.add_argument("genotype")
    p.add_argument("--out", required=True, help="picture file: .svg, .png or .pdf")
    p.add_argument("--renderer", default="auto", choices=("auto", "graphviz", "matplotlib"),
                   help="auto: graphviz's dot if installed (layer strips: matplotlib), else matplotlib")

    p = _command(sub, "plot", cmd_plot)
    p.add_argument("metrics")
    p.add_argument("--out-dir", required=True, help="folder for <figure>.<format> files")
    p.add_argument("--format", default="svg", choices=("svg", "png", "pdf"))

    p = _command(sub, "plot-decisions", cmd_plot_decisions)
    p.add_argument("record")
    p.add_argument("--out", required=True, help="figure file: .svg, .png or .pdf")
    p.add_argument("--title")

    p = _command(sub, "table-html", cmd_table_html)
    p.add_argument("table")
    p.add_argument("--out", required=True, help="HTML fragment file")
    p.add_argument("--title")

    p = _command(sub, "plot-ground-truth", cmd_plot_ground_truth)
    p.add_argument("metrics", nargs="*", help="search metrics.h5 files of nb201 searches")
    p.add_argument("--genotypes", nargs="+", action="extend", default=[], help="genotype.json files of their selections")
    p.add_argument("--out", required=True, help="figure file: .svg, .png or .pdf")

    p = _command(sub, "plot-latency", cmd_plot_latency)
    p.add_argument("table", help="results/tables/latency/<dataset>.csv")
    p.add_argument("--out", required=True, help="figure file: .svg, .png or .pdf")
    return parser


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path of the command can be written (ArtifactError naming the option)."""
    outputs = [(attribute, getattr(args, attribute, None), directory) for attribute, directory in OUTPUT_OPTIONS]
    outputs = [(attribute, path, directory) for attribute, path, directory in outputs if path is not None]
    if not outputs:  # e.g. check-config: no need to load the artifact formats (torch)
        return
    from pipeline.artifacts import ArtifactError, check_writable
    from pipeline.runtime import is_main_process

    if not is_main_process():  # only rank 0 writes; ranks checking at once race on the folders the check makes
        return

    for attribute, path, directory in outputs:
        try:
            check_writable(path, directory=directory)
        except ArtifactError as exc:
            raise ArtifactError(f"--{attribute.replace('_', '-')}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_outputs(args)
        args.func(args)
    except Exception as exc:
        training = sys.modules.get("pipeline.training.signals")
        if training is not None and isinstance(exc, training.Preempted):
            print(f"pipeline {args.command}: {exc}", file=sys.stderr)
            return exc.exit_code
        if isinstance(exc, UserError):  # an ordinary mistake: one line, exit 2
            print(f"pipeline {args.command}: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):  # e.g. the disk filled up while writing
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"pipeline {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:  # Ctrl-C outside the checkpointing loops: nothing to resume
        print(f"pipeline {args.command}: interrupted by Ctrl-C", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
