"""Configuration: YAML files merged in order, validated against the JSON schema and the
registries, and cut into the explicit parameter sets that each stage receives.

Each job's ``stage_params(...)`` is written to its own parameters file (pipeline.planning.jobs),
which its Snakemake rule and its DVC stage both read, so a job reruns exactly when its own
parameters change; users can call the CLI with the config files instead and get the same
parameters.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from pipeline.errors import ConfigError
from pipeline.registry import registries


def schema() -> dict[str, Any]:
    return json.loads(resources.files("pipeline").joinpath("schemas/config.schema.json").read_text())


def deep_merge(base: dict, overlay: dict) -> dict:
    """Snakemake's --configfile semantics: dicts merge recursively, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: file not found")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}:{where} not valid YAML") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return content


def load_config(paths: Iterable[str | Path]) -> dict:
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, read_yaml(path))
    validate_config(merged)
    return merged


def _key(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in path) or "<top level>"


def _schema_error(error: jsonschema.ValidationError, prefix: str = "") -> ConfigError:
    location = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - allowed)
        return ConfigError(f"config key '{prefix}{_key(location + extra[:1])}': unknown key")
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return ConfigError(f"config key '{prefix}{_key(location + missing[:1])}': required key is missing")
    return ConfigError(f"config key '{prefix}{_key(location)}': {error.message}")


def _is_integer(checker, instance) -> bool:
    # JSON Schema counts 3.0 as an integer; range() and tensor shapes do not.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def _validate(instance: Any, subschema: dict, prefix: str = "") -> None:
    validator = _Validator(subschema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise _schema_error(error, prefix)


def method_options(registry, block: dict, key: str) -> dict:
    """Validate a method block against its algorithm's options schema; fill the defaults."""
    try:
        cls = registry.get(block["algorithm"])
    except KeyError as exc:
        raise ConfigError(f"config key '{key}.algorithm': {exc}") from None
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"algorithm": {"type": "string"}, **cls.OPTIONS},
    }
    _validate(block, options_schema, prefix=f"{key}.")
    resolved = {name: spec["default"] for name, spec in cls.OPTIONS.items() if "default" in spec}
    resolved.update(block)
    return resolved


def validate_config(config: dict) -> None:
    search, select, spaces = registries("search", "select", "spaces")

    _validate(config, schema())
    if config["dataset"] not in config["data"]:
        raise ConfigError(f"config key 'dataset': {config['dataset']!r} has no entry under 'data'")
    # Every entry's layout is checked; files only where the default target reads them
    # (other datasets may live on another machine until a target asks for them).
    in_use = {config["dataset"]}
    transfer = config.get("transfer")
    if transfer is not None:
        if transfer["dataset"] not in config["data"]:
            raise ConfigError(f"config key 'transfer.dataset': {transfer['dataset']!r} has no entry under 'data'")
        _check_transfer_source(config["data"][transfer["dataset"]], f"data.{transfer['dataset']}", exists=transfer["enabled"])
    for name, entry in config["data"].items():
        _check_source(entry["source"], f"data.{name}.source", exists=name in in_use)
    for name, override in config["retrain"].get("per_dataset", {}).items():
        if name not in config["data"]:
            raise ConfigError(f"config key 'retrain.per_dataset.{name}': no entry {name!r} under 'data'")
        merged = {**_retrain_base(config["retrain"]), **override}
        _validate(merged, {"$defs": schema()["$defs"], "$ref": "#/$defs/retrain"}, prefix=f"retrain.per_dataset.{name}.")
        if set(override) & LAUNCH_KEYS:
            raise ConfigError(f"config key 'retrain.per_dataset.{name}': {sorted(set(override) & LAUNCH_KEYS)[0]!r} cannot differ per dataset")
    spaces_used = {"search.settings.space": config["search"]["settings"]["space"]}
    for name in config["search"]["methods"]:
        settings = search_settings(config, name)
        if "space" in config["search"]["methods"][name].get("settings", {}):
            spaces_used[f"search.methods.{name}.settings.space"] = settings["space"]
    for key, space in spaces_used.items():
        if space not in spaces.SPACES:
            known = ", ".join(spaces.SPACES.names())
            raise ConfigError(f"config key '{key}': unknown search space {space!r}; known: {known}")
    for section, registry in (("search", search.METHODS), ("select", select.METHODS)):
        block = config[section]
        for index, name in enumerate(block["run"]):
            if name not in block["methods"]:
                raise ConfigError(f"config key '{section}.run[{index}]': {name!r} is not defined under '{section}.methods'")
        if section == "select":
            for search_name, names in block.get("run_for", {}).items():
                if search_name not in config["search"]["methods"]:
                    raise ConfigError(f"config key 'select.run_for.{search_name}': not a method under 'search.methods'")
                for index, name in enumerate(names):
                    if name not in block["methods"]:
                        raise ConfigError(f"config key 'select.run_for.{search_name}[{index}]': {name!r} is not defined under 'select.methods'")
        for name, method in block["methods"].items():
            if section == "search":
                method = {key: value for key, value in method.items() if key != "settings"}
            method_options(registry, method, f"{section}.methods.{name}")
    for name in config["search"]["run"]:
        own = config["search"]["methods"][name].get("settings", {})
        def key_of(setting, name=name, own=own):
            return f"search.methods.{name}.settings.{setting}" if setting in own else f"search.settings.{setting}"
        method_cls = search.METHODS.get(config["search"]["methods"][name]["algorithm"])
        method_cls.check_settings(search_settings(config, name), key_of)
        block = {key: value for key, value in config["search"]["methods"][name].items() if key != "settings"}
        key = f"search.methods.{name}"
        method_cls.check_options(method_options(search.METHODS, block, key), search_settings(config, name), key, key_of)
        _check_partial_channels(search_settings(config, name), key_of)
    _check_selections(config)
    _check_latency(config)
    _check_batch_sizes(config)


def check_batch_fits(key: str, batch_size: int, images: int, split: str) -> None:
    """A training batch larger than its split cannot be drawn (each epoch would be one
    smaller batch, recorded under the configured size): a config error, raised by a stage
    as soon as it knows its data's size, before any work."""
    if batch_size > images:
        raise ConfigError(f"config key '{key}': {batch_size} is larger than the {images} images of {split}")


class _TrainSplit(NamedTuple):
    classes: int
    per_class: int | None  # images of every class, if known
    total: int | None  # images, if known
    balanced: bool  # every class has as many images


def _train_split(name: str, entry: dict) -> _TrainSplit | None:
    """A dataset's train split as far as its config entry tells it (None: classes unknown).
    Known datasets (``known_data.TORCHVISION``) have their class count and balance by name
    in any format, their size only as torchvision reads them; a ``subset`` takes as many
    images of each class."""
    from pipeline.known_data import TORCHVISION

    known = TORCHVISION.get(name)
    if known is None:
        return None
    per_class = (entry.get("subset") or {}).get("train_per_class")
    if per_class is not None:
        return _TrainSplit(known.classes, per_class, known.classes * per_class, True)
    if entry["source"]["format"] == "torchvision":
        return _TrainSplit(known.classes, known.train // known.classes if known.balanced else None, known.train, known.balanced)
    return _TrainSplit(known.classes, None, None, known.balanced)


def _search_halves(split: _TrainSplit, settings: dict) -> tuple[int, int, bool] | None:
    """Images of the weight and the alpha half ``search.supernet_training.search_split`` makes, and
    whether they are exact (else upper bounds); None where the config cannot bound them."""
    classes, per_class, total = split.classes, split.per_class, split.total
    portion, subset = settings["train_portion"], settings["subset_per_class"]
    if per_class is not None:  # the stage's arithmetic, the same for every class
        pool = int(round(min(subset / (total / classes), 1.0) * per_class)) if subset is not None else per_class
        weights = int(round(portion * pool))
        return classes * weights, classes * (pool - weights), True
    if total is None:  # balanced, of unknown size: at most `subset` of each class (both halves grow with it)
        if subset is None or not split.balanced:
            return None
        weights = int(round(portion * subset))
        return classes * weights, classes * (subset - weights), False
    # Classes of unequal sizes: each class's rounding adds at most half an image.
    pool = total if subset is None or subset * classes >= total else subset * classes + classes / 2
    return int(portion * pool + classes / 2), int((1 - portion) * pool + classes / 2), False


def _check_batch_sizes(config: dict) -> None:
    """A batch larger than its split is refused before any job when the config tells the
    split's size: the search halves and the retrain split of every dataset entry whose
    class count is known. The stages check again once they hold their data (user data of
    unknown size; the transfer stage's streamed folders)."""
    (search,) = registries("search")

    for dataset, entry in config["data"].items():
        split = _train_split(dataset, entry)
        if split is None:
            continue
        for name in config["search"]["run"]:
            settings = search_settings(config, name)
            halves = _search_halves(split, settings)
            if halves is None:
                continue
            own = config["search"]["methods"][name].get("settings", {})
            key = f"search.methods.{name}.settings.batch_size" if "batch_size" in own else "search.settings.batch_size"
            bilevel = search.METHODS.get(config["search"]["methods"][name]["algorithm"]).bilevel
            how = [f"{split.classes} classes"]
            if (entry.get("subset") or {}).get("train_per_class") is not None:
                how.append(f"data.{dataset}.subset.train_per_class {entry['subset']['train_per_class']}")
            if settings["subset_per_class"] is not None:
                how.append(f"subset_per_class {settings['subset_per_class']}")
            how.append(f"train_portion {settings['train_portion']}")
            for half, images in (("weight", halves[0]), ("alpha", halves[1]))[: 2 if bilevel else 1]:
                if settings["batch_size"] > images:
                    bound = "" if halves[2] else "at most "
                    raise ConfigError(
                        f"config key '{key}': {settings['batch_size']} is larger than the {bound}{images} images of the {half} half "
                        f"of search {name} on {dataset} ({', '.join(how)})"
                    )
        if split.total is not None:
            batch = retrain_settings(config, dataset)["batch_size"]
            override = "batch_size" in config["retrain"].get("per_dataset", {}).get(dataset, {})
            key = f"retrain.per_dataset.{dataset}.batch_size" if override else "retrain.batch_size"
            if batch > split.total:
                raise ConfigError(f"config key '{key}': {batch} is larger than the {split.total} images of {dataset}'s train split")


def check_threads(threads: int | None, key: str = "--threads") -> int | None:
    """Torch threads must be at least 1 (None: the config's or torch's default)."""
    if threads is not None and threads < 1:
        raise ConfigError(f"{key}: must be at least 1, got {threads}")
    return threads


def _check_partial_channels(settings: dict, key_of) -> None:
    """PC-DARTS mixed ops exist in the DARTS-family supernet, with K dividing every cell's channels."""
    k = settings.get("partial_channels", 1)
    if k == 1:
        return
    (spaces,) = registries("spaces")
    if not spaces.get_space(settings["space"]).darts_cells:
        raise ConfigError(f"config key '{key_of('partial_channels')}': partial channels need a DARTS-family cell space; got {settings['space']!r}")
    if settings["init_channels"] % k:
        raise ConfigError(f"config key '{key_of('partial_channels')}': {k} does not divide init_channels {settings['init_channels']}")


def _accepts(config: dict, select_name: str, search_name: str) -> bool:
    """Whether a selection can read the supernets of a search (``SelectionMethod.SEARCH_ALGORITHMS``)."""
    (select,) = registries("select")

    algorithm = config["search"]["methods"][search_name]["algorithm"]
    return select.METHODS.get(config["select"]["methods"][select_name]["algorithm"]).accepts(algorithm)


def _check_selections(config: dict) -> None:
    """An explicit ``run_for`` pair must fit; every search that runs needs a selection."""
    for search_name, names in config["select"].get("run_for", {}).items():
        for index, name in enumerate(names):
            if not _accepts(config, name, search_name):
                raise ConfigError(f"config key 'select.run_for.{search_name}[{index}]': selection {name!r} cannot read the supernets of {search_name!r}")
    for name in config["search"]["run"]:
        if not selections_for(config, name):
            raise ConfigError(f"config key 'select.run': no selection in it can read the supernets of search {name!r}")


def _check_latency(config: dict) -> None:
    """A lookup needs a table for the space of every search that runs."""
    (latency,) = registries("benchmarks.latency")

    if "latency" not in config or config["latency"]["method"] != "lookup":
        return
    for name in config["search"]["run"]:
        space = search_settings(config, name)["space"]
        if space not in latency.LOOKUPS:
            raise ConfigError(
                f"config key 'latency.method': no lookup table for space {space!r} (search {name}; "
                f"tables: {', '.join(latency.LOOKUPS.names())}); use 'measure'"
            )


def selections_for(config: dict, search_method: str) -> list[str]:
    """The selection methods run on a search method's supernets: ``select.run_for`` or
    ``select.run``, less those that cannot read its supernets (e.g. ``unas`` on DARTS')."""
    names = config["select"].get("run_for", {}).get(search_method, config["select"]["run"])
    return [name for name in names if _accepts(config, name, search_method)]


def judged_by_benchmark(config: dict, search_method: str) -> bool:
    """Whether the search's cells are judged by their benchmark's accuracy instead of being
    retrained: nb201 searches when ``benchmarks.nb201.retrain`` is false."""
    (spaces,) = registries("spaces")

    retrain = config.get("benchmarks", {}).get("nb201", {}).get("retrain", True)
    return not retrain and spaces.get_space(search_settings(config, search_method)["space"]).benchmark == "nb201"


def search_settings(config: dict, method: str) -> dict:
    """``search.settings`` with the method's own ``settings`` block laid over it, so one
    workflow can search several spaces or scales (e.g. a method on nb201 beside DARTS)."""
    overrides = config["search"]["methods"][method].get("settings", {})
    partial = copy.deepcopy(schema()["$defs"]["search_settings"])
    partial.pop("required", None)
    partial["$defs"] = schema()["$defs"]
    _validate(overrides, partial, prefix=f"search.methods.{method}.settings.")
    return {**copy.deepcopy(config["search"]["settings"]), **copy.deepcopy(overrides)}


def _check_source(source: dict, key: str, exists: bool = True) -> None:
    if source["format"] == "imagefolder":
        for split in ("train", "test"):
            if split not in source:
                raise ConfigError(f"config key '{key}.{split}': required for format 'imagefolder'")
            if exists and not Path(source[split]).exists():
                raise ConfigError(f"config key '{key}.{split}': file not found: {source[split]}")
    else:
        if "root" not in source:
            raise ConfigError(f"config key '{key}.root': required for format 'torchvision'")
        if exists and not source.get("download", False) and not Path(source["root"]).exists():
            raise ConfigError(f"config key '{key}.root': file not found: {source['root']} (set download: true to fetch it)")


def _check_transfer_source(entry: dict, key: str, exists: bool = True) -> None:
    """The transfer stage streams an ImageFolder: two directories, no subset."""
    if entry["source"]["format"] != "imagefolder":
        raise ConfigError(f"config key '{key}.source.format': the transfer stage reads 'imagefolder' directories")
    if "subset" in entry:
        raise ConfigError(f"config key '{key}.subset': not supported for the transfer stage's streamed data")
    _check_source(entry["source"], f"{key}.source", exists)
    for split in ("train", "test"):
        path = Path(entry["source"][split])
        if exists and not path.is_dir():
            raise ConfigError(f"config key '{key}.source.{split}': {path} is not a directory (the transfer stage streams class folders)")


# ---------------------------------------------------------------- stages: paths, code, parameters

# Artifact paths, shared by the Snakemake rules and dvc.yaml.
PATHS = {
    "data": "results/data/{dataset}.pt",
    "search_dir": "results/search/{dataset}/{search}/seed{seed}",
    "genotype": "results/select/{dataset}/{search}/{select}/seed{seed}/genotype.json",
    "decisions": "results/select/{dataset}/{search}/{select}/seed{seed}/decisions.h5",
    "retrain_dir": "results/retrain/{dataset}/{search}/{select}/seed{seed}",
    "table": "results/tables/{dataset}.csv",
    # {target}: the dataset transferred to; {dataset}: the one the genotype was searched on
    "transfer_dir": "results/transfer/{target}/{dataset}/{search}/{select}/seed{seed}",
    "latency": "results/latency/{dataset}/{search}/{select}/seed{seed}/latency.json",
    "latency_filter": "results/latency/{dataset}/filter.json",
    "latency_table": "results/tables/latency/{dataset}.csv",
    "latency_plot": "results/tables/latency/{dataset}.svg",
    "table_metrics": "results/tables/{dataset}.json",
    # The table as HTML (the report's first page) and the nb201 searches' ground truth per epoch.
    "table_html": "results/tables/{dataset}.html",
    "ground_truth_plot": "results/tables/{dataset}_ground_truth.svg",
    # Pictures and plots, beside the artifact they show.
    "genotype_picture": "results/select/{dataset}/{search}/{select}/seed{seed}/genotype.svg",
    "decisions_plot": "results/select/{dataset}/{search}/{select}/seed{seed}/decisions.svg",
    "search_plots": "results/search/{dataset}/{search}/seed{seed}/plots",
    "retrain_plots": "results/retrain/{dataset}/{search}/{select}/seed{seed}/plots",
}

# The code each stage depends on is derived from its imports: pipeline.planning.codedeps.

# What may change a stage's numbers. The thread count does on CPU: its kernels split their
# sums by thread, so 1 and 2 threads train to different weights.
NUMERIC_RUNTIME = ("device", "amp", "channels_last", "threads")
# How a job is launched, not what it computes: not part of the stage parameters.
LAUNCH_KEYS = {"gpus"}
TRANSFER_SELECTION_KEYS = {"dataset", "seeds", "enabled"}


def _retrain_base(block: dict) -> dict:
    return {key: value for key, value in block.items() if key not in LAUNCH_KEYS | {"per_dataset"}}


def retrain_settings(config: dict, dataset: str) -> dict:
    """The retrain settings for ``dataset``: the common ones with its per-dataset overrides."""
    block = config["retrain"]
    return {**copy.deepcopy(_retrain_base(block)), **copy.deepcopy(block.get("per_dataset", {}).get(dataset, {}))}


def transfer_block(config: dict) -> dict:
    if "transfer" not in config:
        raise ConfigError("config key 'transfer': required for the transfer stage")
    return config["transfer"]


def launch_gpus(config: dict, stage: str) -> int:
    """Processes (GPUs) a job of ``stage`` runs on; above 1 it is launched by torchrun."""
    block = config.get(stage) or {}
    return int(block.get("gpus", 1))


def _runtime(config: dict) -> dict:
    return {key: config["runtime"][key] for key in NUMERIC_RUNTIME}


def stage_params(config: dict, stage: str, **keys: Any) -> dict:
    """The parameters one job of ``stage`` uses; nothing else of the config reaches it."""
    search, select = registries("search", "select")

    dataset = keys.get("dataset", config["dataset"])
    if stage == "data":
        return {"dataset": dataset, **copy.deepcopy(config["data"][dataset])}
    if stage == "search":
        name = keys["method"]
        block = {key: value for key, value in config["search"]["methods"][name].items() if key != "settings"}
        block = method_options(search.METHODS, block, f"search.methods.{name}")
        return {
            "dataset": dataset,
            "seed": int(keys["seed"]),
            "method": name,
            "options": block,
            "settings": search_settings(config, name),
            "runtime": _runtime(config),
        }
    if stage == "select":
        name = keys["method"]
        block = method_options(select.METHODS, config["select"]["methods"][name], f"select.methods.{name}")
        return {"dataset": dataset, "seed": int(keys["seed"]), "method": name, "options": block, "runtime": _runtime(config)}
    if stage == "retrain":
        return {"dataset": dataset, "seed": int(keys["seed"]), "settings": retrain_settings(config, dataset), "runtime": _runtime(config)}
    if stage == "transfer":
        block = transfer_block(config)
        target = keys.get("dataset", block["dataset"])
        settings = {key: value for key, value in block.items() if key not in LAUNCH_KEYS | TRANSFER_SELECTION_KEYS}
        return {
            "dataset": target,
            "seed": int(keys["seed"]),
            "source": copy.deepcopy(config["data"][target]["source"]),
            "settings": copy.deepcopy(settings),
            "runtime": _runtime(config),
        }
    if stage == "tables":
        nb201_path = config.get("benchmarks", {}).get("nb201", {}).get("path")
        return {"dataset": dataset, "benchmarks": {"nb201": {"path": nb201_path}}}
    if stage == "latency":
        block = config["latency"]
        params = {"dataset": dataset, "seed": int(keys["seed"]), "method": block["method"]}
        if block["method"] == "lookup":
            return {**params, "lookup": copy.deepcopy(block["lookup"])}
        retrain = {key: retrain_settings(config, dataset)[key] for key in ("init_channels", "layers")}
        return {**params, "measure": copy.deepcopy(block["measure"]), "retrain": retrain, "runtime": _runtime(config)}
    if stage == "latency_filter":
        return {"dataset": dataset, "target_ms": config["latency"]["target_ms"]}
    raise ConfigError(f"unknown stage {stage!r}")


STAGE_SCHEMAS = {
    "data": {"required": ["dataset", "source"], "properties": {"dataset": {"type": "string"}, "source": {}, "subset": {}}},
    "search": {
        "required": ["dataset", "seed", "method", "options", "settings", "runtime"],
        "properties": {
            "dataset": {"type": "string"},
            "seed": {"type": "integer", "minimum": 0},
            "method": {"type": "string"},
            "options": {"$ref": "#/$defs/method_block"},
            "settings": {"$ref": "#/$defs/search_settings"},
            "runtime": {"type": "object"},
        },
    },
    "select": {
        "required": ["dataset", "seed", "method", "options", "runtime"],
        "properties": {
            "dataset": {"type": "string"},
            "seed": {"type": "integer", "minimum": 0},
            "method": {"type": "string"},
            "options": {"$ref": "#/$defs/method_block"},
            "runtime": {"type": "object"},
        },
    },
    "retrain": {
        "required": ["dataset", "seed", "settings", "runtime"],
        "properties": {
            "dataset": {"type": "string"},
            "seed": {"type": "integer", "minimum": 0},
            "settings": {"$ref": "#/$defs/retrain"},
            "runtime": {"type": "object"},
        },
    },
    "transfer": {
        "required": ["dataset", "seed", "source", "settings", "runtime"],
        "properties": {
            "dataset": {"type": "string"},
            "seed": {"type": "integer", "minimum": 0},
            "source": {"type": "object"},
            "settings": {"$ref": "#/$defs/transfer_settings"},
            "runtime": {"type": "object"},
        },
    },
    "tables": {
        "required": ["dataset"],
        "properties": {"dataset": {"type": "string"}, "benchmarks": {"$ref": "#/$defs/benchmarks"}},
    },
    "latency": {
        "required": ["dataset", "seed", "method"],
        "properties": {
            "dataset": {"type": "string"},
            "seed": {"type": "integer", "minimum": 0},
            "method": {"enum": ["measure", "lookup"]},
            "measure": {"$ref": "#/$defs/latency/properties/measure"},
            "lookup": {"$ref": "#/$defs/latency/properties/lookup"},
            "retrain": {
                "type": "object",
                "additionalProperties": False,
                "required": ["init_channels", "layers"],
                "properties": {"init_channels": {"type": "integer", "minimum": 2}, "layers": {"type": "integer", "minimum": 1}},
            },
            "runtime": {"type": "object"},
        },
        "if": {"properties": {"method": {"const": "measure"}}},
        "then": {"required": ["measure", "retrain", "runtime"]},
        "else": {"required": ["lookup"]},
    },
    "latency_filter": {
        "required": ["dataset", "target_ms"],
        "properties": {"dataset": {"type": "string"}, "target_ms": {"$ref": "#/$defs/latency/properties/target_ms"}},
    },
}


def _transfer_settings_schema(full: dict) -> dict:
    """The transfer block without the keys that choose what to run (not stage parameters)."""
    block = copy.deepcopy(full["$defs"]["transfer"])
    for key in LAUNCH_KEYS | TRANSFER_SELECTION_KEYS:
        block["properties"].pop(key, None)
    block["required"] = [key for key in block["required"] if key not in TRANSFER_SELECTION_KEYS]
    return block


def validate_stage_params(stage: str, params: Any) -> dict:
    """Check parameters handed to a stage CLI directly (``--params``)."""

    full = schema()
    full["$defs"]["transfer_settings"] = _transfer_settings_schema(full)
    stage_schema = {"type": "object", "additionalProperties": False, "$defs": full["$defs"], **STAGE_SCHEMAS[stage]}
    _validate(params, stage_schema, prefix="params.")
    if stage == "data":
        entry = {key: value for key, value in params.items() if key != "dataset"}
        _validate(entry, {"$defs": full["$defs"], "$ref": "#/$defs/data_entry"}, "params.")
        _check_source(params["source"], "params.source")
    if stage == "transfer":
        _check_transfer_source({"source": params["source"]}, "params")
    if stage in ("search", "select"):
        (package,) = registries(stage)  # the stage's own library imports it anyway
        registry = package.METHODS
        params["options"] = method_options(registry, params["options"], "params.options")
    if "runtime" in params:
        runtime_schema = copy.deepcopy(full["$defs"]["runtime"])
        runtime_schema["required"] = list(NUMERIC_RUNTIME)
        _validate(params["runtime"], runtime_schema, "params.runtime.")
    return params
