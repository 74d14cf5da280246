"""Search-step speed and memory per method: weight step, 1st- and 2nd-order architecture step.

Every registered search method (SDARTS once per mode) is timed on its own code path, and
so is a re-implementation of the original DARTS step (bench/darts_reference.py: every op
evaluated, NCHW, fp32, the unrolled step rebuilding a network each time); "x orig" is the
original's time for the same kind of step divided by ours. Each row runs in a fresh
process, rows of one kind of step back to back (the machine's load drifts). The step is
timed by torch.utils.benchmark (blocked_autorange: one warm-up step, then the median of at
least one more; it synchronises CUDA); peak memory is over those steps, above what the
process held before the first (CPU: resident memory; CUDA: allocated tensor memory), so it
includes state the first step creates (momentum buffers: a few MiB at C=16).

    python bench/search_step.py                                  # CPU-sized (demo) setting
    python bench/search_step.py --setting darts --batch-size 32  # C=16, 8 cells, batch 32
    python bench/search_step.py --setting darts --device cuda    # DARTS defaults on a GPU

A method whose config/config.yaml block sets ``settings.partial_channels`` (pc_darts: K=4)
is timed on that partial-channel supernet. Ours runs with channels_last (and bf16 autocast on CUDA; the unrolled 2nd-order step is
always fp32); change with --channels-last/--amp. On a CPU shared with other work, wall time
says more about the neighbours than about the step: ``--clock cpu --threads 1`` times the
process's CPU time instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import timeit
from pathlib import Path

import torch
from torch.utils import benchmark

SETTINGS = {"cpu": (4, 5, 64), "darts": (16, 8, 64)}  # (C, cells, batch): demo.yaml, config.yaml
STEP_NAMES = {"weight": "weight", "arch1": "arch 1st", "arch2": "arch 2nd", "train": "train (w+a)"}


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class PeakMemory:
    """Peak memory of a block above what was in use before it, in MiB."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak-RSS mark
            self.before = _rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _rss_kib("VmHWM") * 1024
        self.mib = (peak - self.before) / 2**20


def method_variants() -> dict[str, tuple[str, dict]]:
    """Every registered search method; one variant per value of a 'mode' option."""
    from pipeline.search import METHODS

    variants = {}
    for name in METHODS.names():
        modes = METHODS.get(name).OPTIONS.get("mode", {}).get("enum")
        for mode in modes or [None]:
            variants[f"{name}_{mode}" if mode else name] = (name, {"mode": mode} if mode else {})
    return variants


def darts_space_refusal(algorithm: str) -> str | None:
    """Why a method cannot search the DARTS space (then its step is not comparable), or None."""
    from pipeline.config import ConfigError
    from pipeline.search import METHODS

    try:
        METHODS.get(algorithm).check_settings({"space": "darts"})
    except ConfigError as error:
        return str(error).split(": ", 1)[-1]
    return None


def partial_channels(algorithm: str) -> int:
    """K of the supernet the method searches in config/config.yaml (PC-DARTS: 4): the first
    block of that algorithm with ``settings.partial_channels``, else 1."""
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    for block in config["search"]["methods"].values():
        if block["algorithm"] == algorithm and "partial_channels" in block.get("settings", {}):
            return int(block["settings"]["partial_channels"])
    return 1


def method_steps(algorithm: str) -> list[str]:
    from pipeline.search import METHODS

    cls = METHODS.get(algorithm)
    steps = ["weight"] if hasattr(cls, "weight_update") else []
    if hasattr(cls, "arch_step"):
        steps += ["arch1", "arch2"] if "order" in cls.OPTIONS else ["arch1"]
    return steps or ["train"]


# ---------------------------------------------------------------------------- one row (worker)


def _batches(job, device, channels_last):
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    for _ in range(2):
        x = torch.randn(job["batch"], 3, 32, 32, generator=g).to(device).contiguous(memory_format=fmt)
        out.append((x, torch.randint(0, 10, (job["batch"],), generator=g).to(device)))
    return out


def _original_step(job, device):
    sys.path.insert(0, str(Path(__file__).parent))
    import darts_reference as ref

    model = ref.Network(job["channels"], 10, job["layers"]).to(device)
    for a in model.arch_parameters():
        a.data = a.data.to(device)
    architect = ref.Architect(model)
    w_opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    (xw, yw), (xa, ya) = _batches(job, device, channels_last=False)
    if job["step"] == "weight":
        return lambda: ref.weight_step(model, xw, yw, w_opt)
    unrolled = job["step"] == "arch2"
    return lambda: architect.step(xw, yw, xa, ya, 0.025, w_opt, unrolled=unrolled)


def _our_step(job, device):
    from pipeline import runtime
    from pipeline.config import method_options
    from pipeline.search import METHODS
    from pipeline.spaces import get_space

    algorithm, extra = method_variants()[job["method"]]
    options = {"algorithm": algorithm, **extra}
    if "order" in METHODS.get(algorithm).OPTIONS:
        options["order"] = 2 if job["step"] == "arch2" else 1
    options = method_options(METHODS, options, f"bench {job['method']}")
    space = get_space("darts")
    k = partial_channels(algorithm)
    model = space.build_supernet(job["channels"], job["layers"], 10, **({"partial_channels": k} if k > 1 else {}))
    model = model.to(device, memory_format=runtime.memory_format(job["channels_last"]))
    settings = {"grad_clip": 5.0, "space": "darts"}
    method = METHODS.get(algorithm)(space, model, options, settings, device, job["amp"])
    method.on_data(25_000, 25_000)
    method.on_epoch_start(25, 50)  # mid-search: SDARTS' eps, annealed temperatures
    w_opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    batch_w, batch_a = _batches(job, device, job["channels_last"])
    model.train()
    if job["step"] == "weight":
        return lambda: method.weight_update(batch_w, w_opt)
    if job["step"] == "train":
        return lambda: method.train_step(batch_w, batch_a if method.bilevel else None, w_opt, 0.025)
    return lambda: method.arch_step(batch_w, batch_a, w_opt, 0.025)


def run_job(job) -> dict:
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    device = torch.device(job["device"])
    step = _original_step(job, device) if job["impl"] == "original" else _our_step(job, device)
    clock = time.process_time if job["clock"] == "cpu" else timeit.default_timer
    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads(), timer=clock)
    with PeakMemory(device) as memory:
        seconds = timer.blocked_autorange(min_run_time=job["min_time"]).median
    return {**job, "seconds": seconds, "peak_mib": memory.mib}


# ---------------------------------------------------------------------------- the table


def spawn(job) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, env=os.environ.copy()
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench row {job['impl']} {job['method']} {job['step']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="cpu", help="cpu: demo.yaml's search; darts: C=16, 8 cells, batch 64")
    parser.add_argument("--channels", type=int, help="override the setting's C")
    parser.add_argument("--layers", type=int, help="override the setting's cells")
    parser.add_argument("--batch-size", type=int, help="override the setting's batch size")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CPU, and CUDA when there)")
    parser.add_argument("--methods", help="comma-separated subset of: " + ", ".join(method_variants()))
    parser.add_argument("--no-original", action="store_true", help="skip the original DARTS rows")
    parser.add_argument("--channels-last", choices=["on", "off"], default="on")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="bf16", help="ours on CUDA (CPU runs fp32)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per row (at least one step)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time (CPU device, 1 thread)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_job(json.loads(args.worker))))
        return

    channels, layers, batch = SETTINGS[args.setting]
    channels, layers, batch = args.channels or channels, args.layers or layers, args.batch_size or batch
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else [args.device]
    devices = ["cpu"] if devices == ["auto"] else devices
    variants = method_variants()
    chosen = args.methods.split(",") if args.methods else list(variants)
    unknown = [m for m in chosen if m not in variants]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; known: {', '.join(variants)}")
    for name in list(chosen):
        refusal = darts_space_refusal(variants[name][0])
        if refusal:
            print(f"skipped {name}: {refusal}")
            chosen.remove(name)
    if args.threads:
        torch.set_num_threads(args.threads)
    for device in devices:
        cuda = device.startswith("cuda")
        amp = args.amp if cuda else "none"
        if args.clock == "cpu" and (cuda or torch.get_num_threads() != 1):
            parser.error("--clock cpu measures one CPU thread: use it with --device cpu --threads 1")
        common = dict(
            channels=channels, layers=layers, batch=batch, device=device, threads=args.threads, min_time=args.min_time, clock=args.clock
        )
        jobs = []
        for s in STEP_NAMES:
            if not args.no_original and s != "train":
                jobs.append({**common, "impl": "original", "method": "darts", "step": s, "channels_last": False, "amp": "none"})
            for name in chosen:
                if s in method_steps(variants[name][0]):
                    jobs.append({**common, "impl": "ours", "method": name, "step": s, "channels_last": args.channels_last == "on", "amp": amp})
        label = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
        load = "" if cuda else f", load average {os.getloadavg()[0]:.1f}"
        print(
            f"\nsearch step on {label}: C={channels}, {layers} cells, batch {batch}; ours channels_last="
            f"{args.channels_last}, amp {amp}; torch {torch.__version__}{load}; {args.clock} clock"
        )
        print(f"{'impl':<9} {'method':<12} {'step':<12} {'s/step':>8} {'images/s':>9} {'peak MiB':>9} {'x orig':>7}")
        original = {}
        rows = []
        for job in jobs:
            row = spawn(job)
            rows.append(row)
            if row["impl"] == "original":
                original[row["step"]] = row["seconds"]
            ratio = original.get(row["step"])
            ratio = f"{ratio / row['seconds']:7.2f}" if ratio and row["impl"] == "ours" else f"{'':>7}"
            print(
                f"{row['impl']:<9} {row['method']:<12} {STEP_NAMES[row['step']]:<12} {row['seconds']:8.3f} "
                f"{batch / row['seconds']:9.1f} {row['peak_mib']:9.1f} {ratio}",
                flush=True,
            )
        ours = {r["step"]: r["seconds"] for r in rows if r["impl"] == "ours" and r["method"] == "darts"}
        for order in (1, 2):
            key = f"arch{order}"
            if {"weight", key} <= set(original) and {"weight", key} <= set(ours):
                orig, mine = original["weight"] + original[key], ours["weight"] + ours[key]
                print(
                    f"DARTS {order}{'st' if order == 1 else 'nd'}-order search step (arch + weight): ours "
                    f"{batch / mine:.1f} images/s, original {batch / orig:.1f} images/s: {orig / mine:.2f} x the original"
                )


if __name__ == "__main__":
    main()
