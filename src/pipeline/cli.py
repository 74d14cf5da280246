"""``pipeline <stage>``: thin command-line front ends of the stage libraries.

Each stage takes its parameters either as ``--params JSON`` (what Snakemake passes: the
job's own parameters only) or as ``--config FILE [--config FILE ...]`` plus the job keys
(what DVC and people use). Errors print one line naming the culprit and exit 2. A search,
retrain or transfer stopped by SIGTERM/SIGUSR1 (SLURM) writes its checkpoint and exits 75;
rerun it to resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.artifacts import ArtifactError
from pipeline.config import ConfigError, load_config, stage_params, transfer_block, validate_stage_params
from pipeline.data import DataSourceError
from pipeline.latency import LatencyError
from pipeline.pictures import PictureError
from pipeline.plots import PlotError
from pipeline.registry import UnknownNameError
from pipeline.runtime import RuntimeConfigError, is_main_process
from pipeline.select.base import SelectionError
from pipeline.training import PREEMPTED_EXIT, Preempted, stop_on_signal

USER_ERRORS = (
    ConfigError,
    ArtifactError,
    DataSourceError,
    RuntimeConfigError,
    UnknownNameError,
    SelectionError,
    PictureError,
    PlotError,
    LatencyError,
)


def _add_params(parser: argparse.ArgumentParser, *keys: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--params", help="the stage's parameters as JSON (as the workflow passes them)")
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
    if args.threads is not None:
        return args.threads
    return _config(args)["runtime"]["threads"] if args.config else 0


def _params(args: argparse.Namespace, stage: str) -> dict:
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
    return stage_params(config, stage, **keys)


def cmd_data(args):
    from pipeline.data import prepare_dataset

    meta = prepare_dataset(_params(args, "data"), args.out)
    print(f"wrote {args.out}: {meta['sizes']['train']} train / {meta['sizes']['test']} test images, {meta['num_classes']} classes")


def cmd_search(args):
    from pipeline.search.loop import run_search

    params = _params(args, "search")
    with stop_on_signal():
        path = run_search(params, args.data, args.out_dir, threads=_threads(args))
    print(f"wrote {path}")


def cmd_select(args):
    from pipeline.select.run import run_select

    run_select(_params(args, "select"), args.supernet, args.data, args.out, threads=_threads(args), decisions_out=args.decisions)
    print(f"wrote {args.out}")


def cmd_retrain(args):
    from pipeline.retrain import run_retrain

    params = _params(args, "retrain")
    with stop_on_signal():
        summary = run_retrain(params, args.genotype, args.data, args.out_dir, threads=_threads(args))
    if is_main_process():
        print(f"test accuracy {summary['test_acc']:.2f}%, {summary['params_m']:.3f}M parameters")


def cmd_transfer(args):
    from pipeline.transfer import run_transfer

    params = _params(args, "transfer")
    with stop_on_signal():
        summary = run_transfer(params, args.genotype, args.out_dir, threads=_threads(args))
    if is_main_process():
        print(
            f"top-1 {summary['test_top1']:.2f}%, top-5 {summary['test_top5']:.2f}%, C={summary['init_channels']}, "
            f"{summary['params_m']:.3f}M parameters, {summary['multiply_adds_m']:.1f}M multiply-adds"
        )


def cmd_tables(args):
    from pipeline.tables import run_tables

    if not args.metrics and not args.genotypes:
        raise ConfigError("tables: give retrain (or transfer) metrics files, or --genotypes of benchmark-judged cells")
    table = run_tables(
        _params(args, "tables"), args.metrics, args.out, latency=args.latency, metrics_out=args.metrics_out, genotype_paths=args.genotypes
    )
    print(table.to_string(index=False))


def cmd_latency(args):
    from pipeline.latency import run_latency

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    record = run_latency(_params(args, "latency"), args.genotype, args.out, data_path=args.data)
    print(f"wrote {args.out}: {record['latency_ms']:.3f} ms ({record['method']})")


def cmd_latency_filter(args):
    from pipeline.latency import run_latency_filter

    summary = run_latency_filter(_params(args, "latency_filter"), args.latency, args.out)
    for entry in summary["results"]:
        verdict = "kept" if entry["passed"] else "dropped"
        print(f"{verdict:8s}{entry['latency_ms']:10.3f} ms  {entry['genotype_file']}")
    print(f"target {summary['target_ms']} ms: kept {len(summary['kept'])} of {len(summary['results'])}")


def cmd_check_config(args):
    config = load_config(args.config)
    print(f"config OK: dataset {config['dataset']}, search {config['search']['run']}, select {config['select']['run']}")


def cmd_dvc_yaml(args):
    from pipeline.dvc import render_dvc_yaml

    text = render_dvc_yaml(args.config)
    if args.out:
        from pipeline.artifacts import write_bytes_atomic

        write_bytes_atomic(args.out, text.encode())
    else:
        sys.stdout.write(text)


def cmd_show_genotype(args):
    from pipeline.artifacts import read_genotype
    from pipeline.display import genotype_ascii
    from pipeline.spaces import get_space

    genotype = read_genotype(args.genotype)
    print(get_space(genotype["space"]).to_text(genotype["cells"]))
    if not args.text_only:
        print()
        print(genotype_ascii(genotype))


def cmd_show_table(args):
    from pipeline.artifacts import read_table
    from pipeline.display import table_text

    print(table_text(read_table(args.table), all_columns=args.all))


def cmd_draw_genotype(args):
    from pipeline.artifacts import read_genotype
    from pipeline.pictures import render_genotype

    used = render_genotype(read_genotype(args.genotype), args.out, renderer=args.renderer)
    print(f"wrote {args.out} ({used})")


def cmd_plot(args):
    from pipeline.plots import plot_metrics

    for path in plot_metrics(args.metrics, args.out_dir, fmt=args.format):
        print(f"wrote {path}")


def cmd_plot_decisions(args):
    from pipeline.plots import plot_decisions, read_decisions, save_figure

    save_figure(plot_decisions(read_decisions(args.record), title=args.title or f"selection decisions: {args.record}"), args.out)
    print(f"wrote {args.out}")


def cmd_table_html(args):
    from pipeline.artifacts import read_table, write_bytes_atomic
    from pipeline.display import table_html

    write_bytes_atomic(args.out, table_html(read_table(args.table), title=args.title).encode())
    print(f"wrote {args.out}")


def cmd_plot_ground_truth(args):
    from pipeline.plots import ground_truth_figure, save_figure

    save_figure(ground_truth_figure(args.metrics, args.genotypes), args.out)
    print(f"wrote {args.out}")


def cmd_plot_latency(args):
    from pipeline.plots import latency_table_figure, save_figure

    save_figure(latency_table_figure(args.table), args.out)
    print(f"wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="prepare a dataset artifact")
    _add_params(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("search", help="train a supernet")
    _add_params(p, "method", "seed")
    p.add_argument("--data", required=True, help="prepared dataset file")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, help="torch threads (default: runtime.threads with --config, else torch's)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("select", help="derive a genotype from a supernet")
    _add_params(p, "method", "seed")
    p.add_argument("--supernet", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--decisions", help="decision record HDF5 (default: decisions.h5 beside --out)")
    p.add_argument("--threads", type=int, help="torch threads (default: runtime.threads with --config, else torch's)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("retrain", help="train the derived network from scratch")
    _add_params(p, "seed")
    p.add_argument("--genotype", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, help="torch threads (default: runtime.threads with --config, else torch's)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("transfer", help="train a searched cell on ImageNet (mobile setting)")
    _add_params(p, "seed")
    p.add_argument("--genotype", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, help="torch threads (default: runtime.threads with --config, else torch's)")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("tables", help="aggregate retrain (or transfer) results into a table")
    _add_params(p)
    p.add_argument("--out", required=True)
    p.add_argument("--latency", help="latency-filter output: add each row's latency and whether it passed")
    p.add_argument("--metrics-out", help="also write the table's numbers as JSON (for dvc metrics)")
    p.add_argument("metrics", nargs="*", help="retrain metrics.h5 files, or transfer ones")
    p.add_argument("--genotypes", nargs="+", action="extend", default=[],
                   help="genotype.json files of nb201 cells judged by the benchmark instead of retrained (rows without test error)")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("latency", help="latency of a selected architecture (measured or looked up)")
    _add_params(p, "seed")
    p.add_argument("--genotype", required=True)
    p.add_argument("--data", help="prepared dataset (method 'measure': classes and image size)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, help="torch threads of the process (timing uses latency.measure.threads)")
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser("latency-filter", help="keep the architectures within latency.target_ms")
    _add_params(p)
    p.add_argument("--out", required=True)
    p.add_argument("latency", nargs="+", help="latency JSON files")
    p.set_defaults(func=cmd_latency_filter)

    p = sub.add_parser("check-config", help="validate config files")
    p.add_argument("--config", action="append", required=True)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("dvc-yaml", help="write dvc.yaml for the given config files")
    p.add_argument("--config", action="append", required=True)
    p.add_argument("--out")
    p.set_defaults(func=cmd_dvc_yaml)

    p = sub.add_parser("show-genotype", help="print a genotype JSON: the space's text form and an ASCII drawing")
    p.add_argument("genotype")
    p.add_argument("--text-only", action="store_true", help="only the text form (DARTS Genotype(...), NB201 string)")
    p.set_defaults(func=cmd_show_genotype)

    p = sub.add_parser("show-table", help="print a results table CSV aligned for the terminal")
    p.add_argument("table")
    p.add_argument("--all", action="store_true", help="every column, not just the main ones")
    p.set_defaults(func=cmd_show_table)

    p = sub.add_parser("draw-genotype", help="draw a genotype's cells (or layer strip) as a picture")
    p.add_argument("genotype")
    p.add_argument("--out", required=True, help="picture file: .svg, .png or .pdf")
    p.add_argument("--renderer", default="auto", choices=("auto", "graphviz", "matplotlib"),
                   help="auto: graphviz's dot if installed (layer strips: matplotlib), else matplotlib")
    p.set_defaults(func=cmd_draw_genotype)

    p = sub.add_parser("plot", help="plot a metrics HDF5 file: curves, and per-edge op weights of a search")
    p.add_argument("metrics")
    p.add_argument("--out-dir", required=True, help="folder for <figure>.<format> files")
    p.add_argument("--format", default="svg", choices=("svg", "png", "pdf"))
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("plot-decisions", help="plot a selection's decision record (HDF5 or JSON)")
    p.add_argument("record")
    p.add_argument("--out", required=True, help="figure file: .svg, .png or .pdf")
    p.add_argument("--title")
    p.set_defaults(func=cmd_plot_decisions)

    p = sub.add_parser("table-html", help="write a results table CSV as an HTML table (the report's first page)")
    p.add_argument("table")
    p.add_argument("--out", required=True, help="HTML fragment file")
    p.add_argument("--title")
    p.set_defaults(func=cmd_table_html)

    p = sub.add_parser("plot-ground-truth", help="plot nb201 searches' per-epoch benchmark accuracy and their selections' picks")
    p.add_argument("metrics", nargs="*", help="search metrics.h5 files of nb201 searches")
    p.add_argument("--genotypes", nargs="+", action="extend", default=[], help="genotype.json files of their selections")
    p.add_argument("--out", required=True, help="figure file: .svg, .png or .pdf")
    p.set_defaults(func=cmd_plot_ground_truth)

    p = sub.add_parser("plot-latency", help="plot test accuracy vs latency of a latency table, with the target")
    p.add_argument("table", help="results/tables/latency/<dataset>.csv")
    p.add_argument("--out", required=True, help="figure file: .svg, .png or .pdf")
    p.set_defaults(func=cmd_plot_latency)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        print(f"pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"pipeline {args.command}: {exc}", file=sys.stderr)
        return PREEMPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
