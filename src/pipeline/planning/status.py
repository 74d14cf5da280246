"""``dvc status`` folded by stage kind: one line per kind not up to date, with why.

DVC lists every changed file of every stage (a fresh clone of the demo: 306 lines for 34
stages). The kind of a stage is the ``pipeline`` command its ``cmd`` runs, read from
``dvc.yaml`` itself, so the summary follows whatever stages the file holds. What DVC
reports is what is summarised: nothing here decides on its own what is stale.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.planning.jobs import CODE, PARAMS_ROOT

CODE_ROOT = CODE.split("{")[0]
COMMAND = re.compile(r"-m pipeline ([\w-]+)")


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # the pipeline command the stage runs
    locked: bool  # dvc.lock holds a record of it: it ran (or was pulled) at least once
    cmd: str = ""


def stage_kind(cmd: str) -> str:
    found = COMMAND.search(cmd)
    return found.group(1) if found else cmd.split()[0]


def reasons(stage: Stage, changes: list) -> list[str]:
    """Why DVC reports ``stage``: never run, command, code, parameters, inputs, outputs."""
    if not stage.locked:
        return ["never run"]
    found = []
    for change in changes:
        if change == "always changed":
            found.append("always runs")
            continue
        for what, files in (change.items() if isinstance(change, dict) else ()):
            if what == "changed command":
                found.append("command changed")
            elif what == "changed deps":
                for path in files:
                    if path.startswith(CODE_ROOT):
                        found.append("code changed")
                    elif path.startswith(PARAMS_ROOT + "/"):
                        found.append("parameters changed")
                    else:
                        found.append("inputs changed")
            elif what == "changed outs":
                found.append("outputs missing or changed")
    return sorted(set(found)) or ["changed"]


def summarise(status: dict[str, list], stages: list[Stage]) -> list[str]:
    """The lines ``pipeline status`` prints for DVC's ``status`` of ``stages`` (in order)."""
    if not status:
        return [f"Data and pipelines are up to date ({len(stages)} stages)."]
    kinds = list(dict.fromkeys(stage.kind for stage in stages))
    width = max(len(kind) for kind in kinds)
    lines = [f"{len(status)} of {len(stages)} stages are not up to date (dvc status):"]
    for kind in kinds:
        mine = [stage for stage in stages if stage.kind == kind]
        changed = [stage for stage in mine if stage.name in status]
        if not changed:
            continue
        counts = Counter(reason for stage in changed for reason in reasons(stage, status[stage.name]))
        why = ", ".join(reason if counts[reason] == len(changed) else f"{reason} ({counts[reason]})" for reason in counts)
        lines.append(f"  {kind:<{width}}  {len(changed):>3}/{len(mine):<3}  {why}")
    lines.append("`dvc repro` reruns them and what depends on them; `dvc status <stage>` names the files.")
    params = next((stage for stage in stages if stage.name == "params"), None)
    # DVC compares the jobs' parameters and code files, which that stage rewrites first (once
    # they are rewritten, its outputs differ and the stages that read them are named above).
    rewritten = params is not None and "outputs missing or changed" in reasons(params, status.get("params", []))
    if params is not None and params.locked and params.name in status and not rewritten:
        lines.append(f"The config or a module changed: `{params.cmd}` rewrites the jobs' files; `pipeline status` then names the jobs that rerun.")
    return lines


def dvc_status(root: str | Path = ".") -> list[str]:
    """``summarise`` for the DVC project at ``root``."""
    import yaml
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    lock = Path(root) / "dvc.lock"
    locked = set((yaml.safe_load(lock.read_text()) or {}).get("stages", {})) if lock.exists() else set()
    try:
        with Repo(str(root)) as repo:
            stages = [Stage(stage.name, stage_kind(stage.cmd), stage.name in locked, stage.cmd) for stage in repo.index.stages]
            status = {name.rpartition(":")[2]: changes for name, changes in repo.status().items()}
    except DvcException as exc:
        raise UserError(f"dvc status: {str(exc).splitlines()[0]}") from None
    return summarise(status, stages)
