"""What reruns: Snakemake and DVC agree with each other and with the jobs' own files.

A project copy gets stand-in outputs for every job of a config that runs every search
and selection algorithm (plus latency and transfer), recorded as current by both tools
(file times for Snakemake, ``dvc commit`` for DVC); no stage runs. Each probe then makes
one change, asks each tool what it would rerun (``snakemake -n``; DVC's first stage, then
``dvc status`` and the stages downstream in DVC's graph) and puts everything back.
The expected set comes from the jobs' parameters and code files (``pipeline.planning.jobs``): the
jobs whose own file changed, and everything downstream of them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_workflow_end_to_end import BIN, copy_project, env

pytestmark = pytest.mark.slow

BASE, OVERLAY = "config/config.yaml", "config/probe.yaml"
CONFIGS = [BASE, OVERLAY]
T0 = 1_700_000_000  # file time of the inputs; outputs are newer by their depth


@contextlib.contextmanager
def inside(path: Path):
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def probe_overlay() -> dict:
    """Every configured search method (one seed), every selection method on the first
    search whose supernets it reads (and each search with at least one), latency and
    transfer on. Derived from config/config.yaml and the registries, so a method added
    there is probed too."""
    from pipeline.config import _accepts, read_yaml

    base = read_yaml(REPO / BASE)
    searches = list(base["search"]["methods"])
    run_for: dict[str, list[str]] = {name: [] for name in searches}
    for select in base["select"]["methods"]:
        first = next(name for name in searches if _accepts(base, select, name))
        run_for[first].append(select)
    for name, selects in run_for.items():
        if not selects:
            selects.append(next(sel for sel in base["select"]["methods"] if _accepts(base, sel, name)))
    return {
        "seeds": [0],
        "runtime": {"device": "cpu"},
        "data": {
            "cifar10": {"source": {"format": "imagefolder", "train": "data/demo/cifar10-demo.tar.gz", "test": "data/demo/cifar10-demo.tar.gz"}},
            "imagenet": {"source": {"format": "imagefolder", "train": "data/tiny_imagenet/train", "test": "data/tiny_imagenet/val"}},
        },
        "search": {"run": searches},
        "select": {"run_for": run_for},
        "transfer": {"enabled": True},
    }


def final_outputs(jobs) -> list[str]:
    consumed = {dep for job in jobs for dep in job.deps}
    return sorted(out for job in jobs for out in job.outs if out not in consumed)


class Project:
    def __init__(self, root: Path):
        self.root = root

    def config(self) -> dict:
        from pipeline.config import load_config

        with inside(self.root):
            return load_config(CONFIGS)

    def jobs(self):
        from pipeline.planning.jobs import jobs

        return jobs(self.config())

    def job_files(self) -> dict[str, str]:
        from pipeline.planning.jobs import job_files

        with inside(self.root):
            return job_files(self.config(), self.root)

    def write_job_files(self) -> list[str]:
        from pipeline.planning.jobs import write_job_files

        with inside(self.root):
            written = write_job_files(self.config(), ".")
        for path in written:
            os.utime(self.root / path, (T0, T0))
        return written

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, env=env())

    def snakemake_plan(self, in_process: bool = True) -> set[str]:
        """The jobs `snakemake -n` would run for the DVC pipeline's final outputs: through
        Snakemake's API in this process (a dry run's DAG, about 1 s), or the command."""
        jobs = self.jobs()
        producers = {out: job.dvc_name for job in jobs for out in job.outs}
        if in_process:
            planned_outputs = self._snakemake_api(final_outputs(jobs))
        else:
            result = self.run(str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", *CONFIGS, "--", *final_outputs(jobs))
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            text = result.stdout + result.stderr
            planned_outputs = []
            for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
                match = re.search(r"^\s+output: ([^,\n]+)", block, flags=re.M)
                if block.lstrip().startswith(("rule ", "localrule ")) and match:
                    planned_outputs.append(match.group(1))
        unknown = [out for out in planned_outputs if out not in producers]
        assert not unknown, f"Snakemake plans jobs DVC does not have: {unknown[:3]}"
        return {producers[out] for out in planned_outputs}

    def _snakemake_api(self, targets: list[str]) -> list[str]:
        from snakemake.api import SnakemakeApi
        from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

        profile = yaml.safe_load((self.root / "profiles" / "default" / "config.yaml").read_text())
        with inside(self.root), SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, dryrun=True)) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(configfiles=[Path(c) for c in CONFIGS]),
                snakefile=self.root / "Snakefile",
                workdir=self.root,
            )
            dag_api = workflow_api.dag(dag_settings=DAGSettings(
                targets=set(targets), max_checksum_file_size=profile["max-checksum-file-size"]))
            workflow = dag_api.workflow_api._workflow  # what `snakemake -n` lists: the DAG's jobs that need to run
            workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
            workflow._build_dag()
            needrun = workflow.dag.needrun_jobs
            return [job.output[0] for job in (needrun() if callable(needrun) else needrun)]

    def dvc_plan(self) -> set[str]:
        """DVC's first stage (the cmd that `dvc repro` would run), then every stage whose
        dependencies changed and all stages downstream of them in DVC's graph."""
        import networkx as nx
        from dvc.repo import Repo

        from pipeline.cli import main

        with inside(self.root):
            assert main(["params", *sum((["--config", c] for c in CONFIGS), []), "--dvc-yaml", "dvc.yaml"]) == 0
        for path in self.root.joinpath("results", "params").rglob("*.json"):
            if path.stat().st_mtime > T0 + 1:  # what it rewrote: as old as the rest for Snakemake
                os.utime(path, (T0, T0))
        with Repo(str(self.root)) as repo:
            changed = {name.rpartition(":")[2] for name in repo.status()} - {"params"}
            graph = repo.index.graph  # edges run from a stage to the stages it depends on
            names = {stage: stage.name for stage in graph.nodes}
            by_name = {name: stage for stage, name in names.items()}
            rerun = set(changed)
            for name in changed:
                rerun.update(names[s] for s in nx.ancestors(graph, by_name[name]))
        return {name for name in rerun if name != "params"}

    def downstream(self, names: set[str]) -> set[str]:
        jobs = self.jobs()
        out = set(names)
        grew = True
        while grew:
            outs = {o for job in jobs if job.dvc_name in out for o in job.outs}
            more = {job.dvc_name for job in jobs if set(job.deps) & outs} - out
            out |= more
            grew = bool(more)
        return out

    def expected(self, before: dict[str, str]) -> set[str]:
        """Jobs whose parameters or code file changed, and everything downstream."""
        after = self.job_files()
        changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
        return self.downstream({job.dvc_name for job in self.jobs() if job.params in changed or job.code in changed})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = copy_project(tmp_path_factory.mktemp("reruns"))
    for split in ("train", "val"):
        (root / "data" / "tiny_imagenet" / split / "class0").mkdir(parents=True)
    (root / OVERLAY).write_text(yaml.safe_dump(probe_overlay()))
    project = Project(root)
    assert project.run("git", "init", "-q").returncode == 0
    gen = project.run(str(BIN / "python"), "-m", "pipeline", "dvc-yaml", *sum((["--config", c] for c in CONFIGS), []), "--out", "dvc.yaml")
    assert gen.returncode == 0, gen.stderr
    project.write_job_files()
    # Stand-in outputs, each newer than what it is made from.
    jobs = project.jobs()
    depth: dict[str, int] = {}
    producers = {out: job for job in jobs for out in job.outs}

    def level(job) -> int:
        if job.dvc_name not in depth:
            depth[job.dvc_name] = 1 + max((level(producers[d]) for d in job.deps if d in producers), default=0)
        return depth[job.dvc_name]

    for path in [*root.joinpath("results", "params").rglob("*"), *(root / p for p in CONFIGS)]:
        os.utime(path, (T0, T0))
    for job in jobs:
        for out in job.outs:
            path = root / out
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{out}\n")
            os.utime(path, (T0 + 10 * level(job), T0 + 10 * level(job)))
    commit = project.run(str(BIN / "dvc"), "commit", "--force")
    assert commit.returncode == 0, commit.stderr
    assert project.snakemake_plan(in_process=False) == set()  # the command agrees with the API
    assert project.snakemake_plan() == set()
    assert project.dvc_plan() == set()
    return project


def mutated(value, spec: dict):
    """A different value the schema accepts, or None."""
    kind = spec.get("type")
    if kind == "array" or isinstance(value, list):
        items = spec.get("items", {})
        value = list(value or [])
        if "enum" in items:
            missing = [v for v in items["enum"] if v not in value]
            return value + missing[-1:] if missing else value[:-1]
        if value and isinstance(value[0], (int, float)) and not isinstance(value[0], bool):
            return [mutated(value[0], items)] + value[1:]
        return None
    if "enum" in spec:
        others = [v for v in spec["enum"] if v != value]
        return others[0] if others else None
    if kind == "boolean" or isinstance(value, bool):
        return not value
    if kind == "integer" or (isinstance(value, int) and kind is None):
        new = (value or 0) + 1
        return new if new <= spec.get("maximum", new) else (value or 0) - 1
    if kind == "number" or isinstance(value, float):
        new = (value if value is not None else 0.1) * 0.5
        return new if new != value else 0.25
    return None


def set_key(tree: dict, dotted: str, value) -> dict:
    tree = copy.deepcopy(tree)
    node = tree
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return tree


def get_key(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def option_keys(config: dict) -> list[tuple[str, dict]]:
    """Per search and selection algorithm that has options: one configured method using it
    and the first option whose change the config accepts (several tried in probe_key)."""
    from pipeline.registry import registries

    keys = []
    for section in ("search", "select"):
        (package,) = registries(section)
        for algorithm in package.METHODS.names():
            options = package.METHODS.get(algorithm).OPTIONS
            methods = [name for name, block in config[section]["methods"].items() if block["algorithm"] == algorithm]
            if not options:
                continue
            assert methods, f"no configured {section} method runs algorithm {algorithm!r}: the probe cannot cover it"
            keys.append((f"{section}.methods.{methods[0]}", options))
    return keys


STAGE_KEYS = [  # one key per stage kind's parameters (data, search settings, retrain, ...)
    ("data.cifar10.subset", {"train_per_class": 100, "test_per_class": 2, "seed": 0}),  # every split half holds a batch (unas: 10 %)
    ("search.settings.epochs", None),
    ("retrain.epochs", None),
    ("runtime.amp", None),
    ("runtime.threads", 3),  # CPU sums split by thread: the count changes the numbers
    ("benchmarks.nb201.path", "data/nb201.csv"),
    ("latency.measure.repeats", None),
    ("latency.target_ms", None),
    ("transfer.epochs", None),
]


# How a job is launched, not what it computes: no job's parameters hold them.
LAUNCH_KEYS = [("cluster.gpu.mem_mb", 1234), ("cluster.rules.tables.runtime", 7)]


def probes(project: Project) -> list[tuple[str, str, object]]:
    """(config file, dotted key, new value): every stage kind's key and every algorithm's
    option, each in the base config and in the overlay (where it was not set before)."""
    from pipeline.config import schema

    config = project.config()
    full = schema()
    out = []
    for key, value in STAGE_KEYS:
        if value is None:
            current = get_key(config, key)
            spec = {"type": "number"} if isinstance(current, float) else {}
            if key == "runtime.amp":
                spec = full["$defs"]["runtime"]["properties"]["amp"]
            value = mutated(current, spec)
        out.append((key, value))
    for block_key, options in option_keys(config):
        block = get_key(config, block_key)
        for name, spec in options.items():
            from pipeline.config import method_options  # noqa: F401  (defaults filled below)

            current = block.get(name, spec.get("default"))
            value = mutated(current, spec)
            if value is None:
                continue
            candidate = set_key(config, f"{block_key}.{name}", value)
            try:
                from pipeline.config import validate_config

                with inside(project.root):
                    validate_config(candidate)
            except Exception:
                continue
            out.append((f"{block_key}.{name}", value))
            break
        else:
            pytest.fail(f"{block_key}: no option could be changed")
    return [(where, key, value) for key, value in out for where in (BASE, OVERLAY)]


def probe(project: Project, where: str, key: str, value) -> tuple[set[str], set[str], set[str]]:
    """(expected, Snakemake's, DVC's) rerun sets after setting ``key`` in one config file."""
    path = project.root / where
    original = path.read_text()
    before = project.job_files()
    overlay = yaml.safe_load(original) or {}
    if where == OVERLAY:
        with contextlib.suppress(KeyError, TypeError):
            get_key(overlay, key)
            pytest.fail(f"{key}: already in the overlay")
    path.write_text(yaml.safe_dump(set_key(overlay, key, value), sort_keys=False))
    try:
        return project.expected(before), project.snakemake_plan(), project.dvc_plan()
    finally:
        path.write_text(original)
        os.utime(path, (T0, T0))
        project.write_job_files()


def test_every_key_reruns_the_same_jobs_in_snakemake_and_dvc(project):
    reached: set[str] = set()
    for where, key, value in probes(project):
        expected, snakemake, dvc = probe(project, where, key, value)
        assert expected, f"{where}: {key} = {value!r} changes no job's parameters"
        assert snakemake == expected, f"{where}: {key}: Snakemake differs on {sorted(snakemake ^ expected)[:5]}"
        assert dvc == expected, f"{where}: {key}: DVC differs on {sorted(dvc ^ expected)[:5]}"
        reached |= {name.split("@")[0] for name in expected if "@" in name}
        reached |= {job.kind for job in project.jobs() if job.dvc_name in expected}
    assert reached == {job.kind for job in project.jobs()}, "a stage kind no probed key reaches"


def test_launch_settings_rerun_nothing(project):
    for where in (BASE, OVERLAY):
        for key, value in LAUNCH_KEYS:
            assert probe(project, where, key, value) == (set(), set(), set()), f"{where}: {key}"


def test_the_snakemake_command_plans_as_its_api_does(project):
    """The probes ask Snakemake's API (in this process); the command gives the same plan."""
    path = project.root / OVERLAY
    original = path.read_text()
    path.write_text(yaml.safe_dump(set_key(yaml.safe_load(original), "retrain.epochs", 3)))
    try:
        api, command = project.snakemake_plan(), project.snakemake_plan(in_process=False)
    finally:
        path.write_text(original)
        os.utime(path, (T0, T0))
        project.write_job_files()
    assert api == command and api


def module_classes(root: Path) -> dict[frozenset, list[str]]:
    """Modules under src/pipeline grouped by the stage kinds whose code includes them."""
    from pipeline.planning.codedeps import STAGE_ENTRY, stage_code

    code = {kind: set(stage_code(kind, root)) for kind in STAGE_ENTRY}
    classes: dict[frozenset, list[str]] = {}
    for path in sorted(root.joinpath("src", "pipeline").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        classes.setdefault(frozenset(k for k in code if relative in code[k]), []).append(relative)
    return classes


def test_editing_a_module_reruns_exactly_the_stages_that_import_it(project):
    """Every module in turn changes exactly the code files of the stage kinds that import
    it (in-process, cheap); one module of each group with the same importers also goes
    through both tools (a dry run each), which keeps the test to about a dozen plans."""
    from pipeline.planning.codedeps import STAGE_ENTRY
    from pipeline.planning.jobs import code_path

    classes = module_classes(project.root)
    for kinds, modules in classes.items():
        for module in modules:
            path = project.root / module
            original = path.read_text()
            before = project.job_files()
            path.write_text(original + "\n# an edit\n")
            try:
                after = project.job_files()
            finally:
                path.write_text(original)
            changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
            assert changed == {code_path(kind) for kind in kinds}, module
    assert set().union(*classes) == set(STAGE_ENTRY)  # every stage kind has code of its own
    for kinds, modules in classes.items():
        path = project.root / modules[0]
        original = path.read_text()
        before = project.job_files()
        path.write_text(original + "\n# an edit\n")
        try:
            expected = project.expected(before)
            snakemake, dvc = project.snakemake_plan(), project.dvc_plan()
        finally:
            path.write_text(original)
            project.write_job_files()
        assert {job.dvc_name for job in project.jobs() if job.stage in kinds} <= expected, modules[0]
        assert snakemake == expected, f"{modules[0]}: Snakemake differs on {sorted(snakemake ^ expected)[:5]}"
        assert dvc == expected, f"{modules[0]}: DVC differs on {sorted(dvc ^ expected)[:5]}"


def test_derived_code_holds_every_module_a_stage_imports():
    """The static closure misses nothing Python actually imports for the stage."""
    import json
    import sys

    from pipeline.planning.codedeps import CLI_MODULES, STAGE_ENTRY, stage_code

    for stage, entries in STAGE_ENTRY.items():
        script = (
            "import importlib, json, sys\n"
            # __main__ would run the CLI; it imports only pipeline.cli
            f"for name in {[m for m in CLI_MODULES + entries if m != 'pipeline.__main__']!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'pipeline')))"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        imported = {Path(f).resolve().relative_to(REPO).as_posix() for f in json.loads(result.stdout)}
        assert imported <= set(stage_code(stage)), f"{stage}: {sorted(imported - set(stage_code(stage)))}"
