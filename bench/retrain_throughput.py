"""Retrain training throughput (images/s) with channels_last and AMP on and off.

Times the retrain stage's own code path: uint8 images resident on the device, augmented
there (crop, flip, cutout) by BatchLoader, one SGD step per batch through
pipeline.training.steps.train_epoch, with the DARTS-V2 cell. Timing by torch.utils.benchmark
(it synchronises CUDA). AMP rows appear on CUDA only (CPU always runs fp32). On CUDA it
also counts the host-device synchronisations of one epoch (torch's sync debug mode):
the loop should make none per batch (fp16's GradScaler makes one per step).

    python bench/retrain_throughput.py                          # small CPU network
    python bench/retrain_throughput.py --device cuda --channels 36 --layers 20 --batch-size 96
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch.utils import benchmark

from pipeline import runtime
from pipeline.spaces import get_space
from pipeline.training.data import Augment, BatchLoader
from pipeline.training.steps import auxiliary_criterion, train_epoch

DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def measure(device: torch.device, channels_last: bool, amp: str, args) -> float:
    torch.manual_seed(0)
    space = get_space("darts")
    net = space.build_network(space.from_text(DARTS_V2), args.channels, args.layers, 10, auxiliary=True)
    net = net.to(device, memory_format=runtime.memory_format(channels_last)).train()
    net.set_drop_path_prob(0.2)
    count = args.batch_size * args.steps
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (count,), device=device)
    loader = BatchLoader(images, labels, None, args.batch_size, [0.5] * 3, [0.25] * 3, Augment(4, True, 16), True, channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    scaler = runtime.grad_scaler(device, amp)
    criterion = auxiliary_criterion(0.4)

    def epoch():
        train_epoch(net, loader.epoch(0), loader.global_batch_sizes(), optimizer, scaler, criterion, 5.0, device, amp)

    epoch()  # warm-up: kernels chosen, caches filled
    syncs = None
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                epoch()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    timer = benchmark.Timer(stmt="epoch()", globals={"epoch": epoch})
    seconds = timer.blocked_autorange(min_run_time=args.min_time).median
    return count / seconds, syncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (both when CUDA is there)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="batches per timed run (one epoch)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds of timing per row")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else [args.device]
    devices = ["cpu"] if devices == ["auto"] else devices
    print(f"DARTS-V2 C={args.channels}, {args.layers} cells, batch {args.batch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'device':<28} {'channels_last':>13} {'amp':>5} {'images/s':>10} {'syncs/epoch':>12}")
    for name in devices:
        device = runtime.resolve_device(name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for amp in (("none", "bf16", "fp16") if device.type == "cuda" else ("none",)):
            for channels_last in (False, True):
                rate, syncs = measure(device, channels_last, amp, args)
                shown = "-" if syncs is None else str(syncs)
                print(f"{label:<28} {str(channels_last):>13} {amp:>5} {rate:>10.1f} {shown:>12}")


if __name__ == "__main__":
    main()
