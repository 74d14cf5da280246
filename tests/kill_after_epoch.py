"""Run a pipeline CLI command and SIGKILL the process right after the checkpoint of a
given epoch is written, as a crash or a pre-empted cluster job would.

    python tests/kill_after_epoch.py EPOCH <pipeline arguments...>
    torchrun --nproc_per_node 2 tests/kill_after_epoch.py EPOCH <pipeline arguments...>
"""

import os
import signal
import sys

from pipeline import artifacts
from pipeline.cli import main

kill_epoch = int(sys.argv[1])
real_save = artifacts.save_checkpoint


def save_then_die(path, kind, payload):
    real_save(path, kind, payload)
    if payload["epoch"] == kill_epoch and path.name == "last.pt":
        os.kill(os.getpid(), signal.SIGKILL)


artifacts.save_checkpoint = save_then_die
sys.exit(main(sys.argv[2:]))
