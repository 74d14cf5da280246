"""Build data/demo/cifar10-demo.tar.gz: a class-balanced subset of the CIFAR-10 JPEG tarballs.

Run once by a maintainer; the output is committed so that a fresh clone runs the demo
without network or DVC remote. Usage:
    python scripts/make_demo_data.py ../shared/data/cifar10-jpeg data/demo/cifar10-demo.tar.gz
"""

import io
import random
import sys
import tarfile
from pathlib import Path

PER_CLASS = {"train": 500, "test": 100}
SEED = 0


def main(source_dir: str, out: str) -> None:
    rng = random.Random(SEED)
    with tarfile.open(out, "w:gz", format=tarfile.USTAR_FORMAT) as target:
        for split, per_class in PER_CLASS.items():
            with tarfile.open(Path(source_dir) / f"{split}.tar.gz") as archive:
                members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".jpg")]
                by_class: dict[str, list[tarfile.TarInfo]] = {}
                for member in members:
                    by_class.setdefault(member.name.split("/")[-2], []).append(member)
                for label in sorted(by_class):
                    ordered = sorted(by_class[label], key=lambda m: m.name)
                    for member in sorted(rng.sample(ordered, per_class), key=lambda m: m.name):
                        data = archive.extractfile(member).read()
                        info = tarfile.TarInfo(f"{split}/{label}/{Path(member.name).name}")
                        info.size, info.mtime, info.mode = len(data), 0, 0o644
                        target.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main(*sys.argv[1:3])
