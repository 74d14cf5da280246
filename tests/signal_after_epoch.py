"""Run a pipeline CLI command; the process that writes the checkpoint of a given epoch
(rank 0) sends itself SIGUSR1 right after, as if SLURM's stop signal reached it alone.

    torchrun --nproc_per_node 2 tests/signal_after_epoch.py EPOCH <pipeline arguments...>
"""

import signal
import sys

from pipeline import artifacts
from pipeline.cli import main

signal_epoch = int(sys.argv[1])
real_save = artifacts.save_checkpoint


def save_then_signal(path, kind, payload):
    real_save(path, kind, payload)
    if payload["epoch"] == signal_epoch and path.name == "last.pt":
        signal.raise_signal(signal.SIGUSR1)


artifacts.save_checkpoint = save_then_signal
sys.exit(main(sys.argv[2:]))
