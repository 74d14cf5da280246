"""GPU generations: which compute capability a cluster's GPU model has, and whether a torch
build has kernels for it (``torch.cuda.get_arch_list()``). No torch here: the config check
(``pipeline check-gpu``) and the runtime's device check both use it."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Compute capability of each GPU model, by the names clusters give their gres types
# (matched after lower-casing and dropping punctuation, a "tesla"/"nvidia" prefix and
# suffixes such as "-sxm2-32gb"). Anything else: set ``cluster.gpu.compute_capability``.
GPU_CAPABILITIES: dict[str, tuple[int, int]] = {
    "p100": (6, 0),
    "v100": (7, 0),
    "t4": (7, 5),
    "rtx2080ti": (7, 5),
    "rtx6000": (7, 5),
    "a100": (8, 0),
    "a30": (8, 0),
    "a10": (8, 6),
    "a40": (8, 6),
    "rtx3090": (8, 6),
    "rtxa6000": (8, 6),
    "a6000": (8, 6),
    "l4": (8, 9),
    "l40": (8, 9),
    "l40s": (8, 9),
    "rtx4090": (8, 9),
    "h100": (9, 0),
    "h200": (9, 0),
    "gh200": (9, 0),
    "b100": (10, 0),
    "b200": (10, 0),
}


def gpu_capability(model: str) -> tuple[int, int] | None:
    """Compute capability of a gres type name such as ``v100`` or ``tesla_v100-sxm2-32gb``."""
    name = re.sub(r"[^a-z0-9]", "", model.lower())
    name = re.sub(r"^(nvidia|tesla)+", "", name)
    for known in sorted(GPU_CAPABILITIES, key=len, reverse=True):
        if name.startswith(known):
            return GPU_CAPABILITIES[known]
    return None


def arch_covers(arch_list: Iterable[str], capability: tuple[int, int]) -> bool:
    """Whether a torch build with ``torch.cuda.get_arch_list()`` == ``arch_list`` has kernels
    for a GPU of ``capability``: a cubin ``sm_XY`` runs on X.Y and later minors of major X
    (``sm_XYa`` on X.Y only); PTX ``compute_XY`` is compiled at load time for X.Y and newer."""
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if not match:
            continue
        kind, built, suffix = match.group(1), (int(match.group(2)), int(match.group(3))), match.group(4)
        if kind == "compute" and not suffix and built <= capability:
            return True
        if kind == "sm" and (built == capability if suffix == "a" else built[0] == capability[0] and built[1] <= capability[1]):
            return True
    return False


def check_gpu_build(config: dict, arch_list: list[str], torch_version: str, gpu_model: str | None = None) -> str:
    """One line saying which GPU model the torch build can run; ``ValueError`` (one line)
    when the build has no kernels for the configured ``cluster.gpu.gpu_model`` (or
    ``gpu_model``), as the CUDA 13 builds lack V100 (sm_70)."""
    block = config.get("cluster", {}).get("gpu", {})
    key = "cluster.gpu.gpu_model"
    if gpu_model is None:
        gpu_model = block.get("gpu_model")
    else:
        key = "--gpu-model"
    if not gpu_model:
        return f"{key}: not set (any GPU); nothing to check"
    if block.get("compute_capability") and key != "--gpu-model":
        source = "cluster.gpu.compute_capability"
        match = re.fullmatch(r"(\d+)\.(\d)", str(block["compute_capability"]))
        if not match:
            raise ValueError(f"{source}: {block['compute_capability']!r} is not of the form '7.0'")
        capability = (int(match.group(1)), int(match.group(2)))
    else:
        capability, source = gpu_capability(gpu_model), key
        if capability is None:
            known = ", ".join(sorted(GPU_CAPABILITIES))
            raise ValueError(f"{key}: unknown GPU model {gpu_model!r}; known: {known} (or set cluster.gpu.compute_capability)")
    wanted = f"{gpu_model} (compute capability {capability[0]}.{capability[1]}, from {source})"
    if not arch_list:
        raise ValueError(f"{wanted}: the installed torch {torch_version} is a CPU-only build; see README, 'GPU generations'")
    if not arch_covers(arch_list, capability):
        raise ValueError(
            f"{wanted}: the installed torch {torch_version} has no kernels for it (built for {' '.join(arch_list)}); "
            "install a build that has, see README, 'GPU generations'"
        )
    return f"torch {torch_version} can run {wanted}"
