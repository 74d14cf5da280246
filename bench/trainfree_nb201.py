"""Rank correlation of the train-free proxies with NAS-Bench-201 CIFAR-10 accuracy.

A seeded sample of NAS-Bench-201 cells (default 200 of the 15,625) is scored by each proxy
as ``select/trainfree.py`` computes it, on the NB201 network (C=16, 5 cells per stage,
10 classes) built fresh per cell from (seed, cell); the data-dependent proxies read
batches of CIFAR-10 training images (the committed demo subset, data/demo) shared by all
cells. Printed: Spearman's rho of each proxy's score with the benchmark's CIFAR-10 test
accuracy after 200 epochs, and the time per cell.

    python bench/trainfree_nb201.py                       # 200 cells, synflow, zico, nwot
    python bench/trainfree_nb201.py --cells 1000 --proxies synflow,snip,grasp,zico,nwot

No published figures are quoted: the ZiCo paper's table (Li et al., ICLR 2023, NATS-Bench-TSS)
could not be checked from here, so figures recalled from it were removed; compare with that
table directly, minding that its batch sizes and initialisations differ from ours.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_TAR = REPO / "data" / "demo" / "cifar10-demo.tar.gz"


def spearman(a, b) -> float:
    """Spearman's rho (average ranks for ties)."""
    import pandas as pd

    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def demo_batches(batch_size: int, count: int, seed: int):
    from pipeline.stages.data import prepare_dataset
    from pipeline.training.data import BatchLoader, load_prepared

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cifar10.pt"
        prepare_dataset(
            {
                "dataset": "cifar10",
                "source": {"format": "imagefolder", "train": str(DEMO_TAR), "test": str(DEMO_TAR)},
                "subset": {"train_per_class": -(-batch_size * count // 10), "test_per_class": 1, "seed": seed},
            },
            out,
        )
        data = load_prepared(out)
    loader = BatchLoader(data.train_images, data.train_labels, None, batch_size, data.meta["mean"], data.meta["std"], shuffle=True)
    return list(loader.epoch(seed))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxies", default="synflow,zico,nwot")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--zico-batches", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pipeline.benchmarks import nb201
    from pipeline.select import trainfree
    from pipeline.spaces import get_space

    proxies = args.proxies.split(",")
    unknown = [p for p in proxies if p not in trainfree.PROXIES]
    if unknown:
        parser.error(f"unknown proxy {unknown[0]!r}; known: {', '.join(trainfree.PROXIES)}")
    table = nb201._table(None, None)
    rows = np.random.default_rng(args.seed).choice(len(table), size=args.cells, replace=False)
    cells = table.iloc[np.sort(rows)]
    batches = demo_batches(args.batch_size, args.zico_batches, args.seed)
    space = get_space("nb201")

    scores = {p: [] for p in proxies}
    seconds = {p: 0.0 for p in proxies}
    for i, arch in enumerate(cells["arch"]):
        genotype = space.from_text(arch)
        for proxy in proxies:
            torch.manual_seed(trainfree._seed(args.seed, i, 1))
            net = space.build_network(genotype, 16, 17, 10, False)
            started = time.process_time()
            if proxy == "synflow":
                score = trainfree.synflow(net, (3, 32, 32), torch.device("cpu"))
            elif proxy == "zico":
                score = trainfree.zico(net, batches)
            elif proxy == "nwot":
                score = trainfree.nwot(net, batches[0][0])
            else:
                score = getattr(trainfree, proxy)(net, *batches[0])
            seconds[proxy] += time.process_time() - started
            scores[proxy].append(score if np.isfinite(score) else -np.inf)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(cells)} cells", file=sys.stderr, flush=True)

    truth = cells["cifar10_test_200ep"].to_numpy()
    print(
        f"\nNAS-Bench-201 CIFAR-10, {len(cells)} cells (seed {args.seed}), batch {args.batch_size}, "
        f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'proxy':<8} {'spearman rho':>12} {'CPU s/cell':>11}")
    for proxy in proxies:
        print(f"{proxy:<8} {spearman(scores[proxy], truth):12.3f} {seconds[proxy] / len(cells):11.3f}")


if __name__ == "__main__":
    main()
