"""``pipeline status``: DVC's status folded by stage kind (the end-to-end DVC test runs it
on a real project; here, DVC's status records as its API returns them)."""

from pipeline.planning.status import Stage, stage_kind, summarise

STAGES = [
    Stage("params", "params", True, "python -m pipeline params --config config/config.yaml --dvc-yaml dvc.yaml"),
    Stage("data_cifar10", "data", True),
    *(Stage(f"search@cifar10.darts.seed{seed}", "search", True) for seed in (0, 1)),
    *(Stage(f"select@cifar10.darts.pt.seed{seed}", "select", seed == 0) for seed in (0, 1)),
    Stage("tables_cifar10", "tables", True),
]


def test_kind_is_the_pipeline_command_the_stage_runs():
    assert stage_kind("python -m pipeline latency-filter --params-file results/params/x.json") == "latency-filter"
    assert stage_kind("torchrun --standalone --nproc_per_node 4 -m pipeline transfer --params-file p") == "transfer"
    assert stage_kind("make something") == "make"


def test_up_to_date_is_one_line():
    assert summarise({}, STAGES) == ["Data and pipelines are up to date (7 stages)."]


def test_one_line_per_changed_kind_with_counts_and_reasons():
    status = {
        "search@cifar10.darts.seed1": [{"changed deps": {"results/params/code/search.json": "modified"}}],
        "select@cifar10.darts.pt.seed0": [
            {"changed deps": {"results/params/select/cifar10/darts/pt/seed0.json": "modified",
                              "results/search/cifar10/darts/seed0/supernet.pt": "modified"}},
        ],
        "select@cifar10.darts.pt.seed1": [{"changed outs": {"results/select/x/genotype.json": "deleted"}}],
        "tables_cifar10": [{"changed command": "python -m pipeline tables"}, {"changed outs": {"results/tables/cifar10.csv": "modified"}}],
    }
    lines = summarise(status, STAGES)
    assert lines[0] == "4 of 7 stages are not up to date (dvc status):"
    body = {line.split()[0]: line.split(None, 2)[2] for line in lines[1:-1]}
    assert list(body) == ["search", "select", "tables"]  # dvc.yaml's order; kinds up to date are left out
    assert lines[1].split()[1] == "1/2" and lines[2].split()[1] == "2/2"
    assert body["search"] == "code changed"
    # a reason every changed stage of the kind shares stands alone; others say how many
    assert body["select"] == "inputs changed (1), parameters changed (1), never run (1)"
    assert body["tables"] == "command changed, outputs missing or changed"
    assert "params" not in lines[-1]


def test_a_changed_config_points_to_the_command_that_rewrites_the_jobs_files():
    lines = summarise({"params": [{"changed deps": {"config/demo.yaml": "modified"}}]}, STAGES)
    assert lines[1].split() == ["params", "1/1", "inputs", "changed"]
    assert "`python -m pipeline params --config config/config.yaml --dvc-yaml dvc.yaml` rewrites" in lines[-1]


def test_once_the_jobs_files_are_rewritten_the_hint_goes():
    status = {
        "params": [{"changed deps": {"config/demo.yaml": "modified"}}, {"changed outs": {"results/params": "modified"}}],
        "search@cifar10.darts.seed0": [{"changed deps": {"results/params/search/cifar10/darts/seed0.json": "modified"}}],
    }
    lines = summarise(status, STAGES)
    assert lines[2].split() == ["search", "1/2", "parameters", "changed"]
    assert lines[-1].startswith("`dvc repro` reruns them")
