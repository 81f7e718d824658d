"""`datasets.yaml` -> typed, validated dataset and suite specs.

The file is data, not code: it is read with a `yaml.SafeLoader` that refuses a key given
twice in one mapping (plain YAML keeps the last, so a second `noise:` entry would replace
the first in silence), and every entry is checked here so that a typo fails at load time
with a message naming the entry, never later as a `None` deep inside training.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import HaloBenchError, unknown_name
from ..core.limits import MAX_LR, MAX_WEIGHT_DECAY

REGISTRY_ENV = "HALO_BENCH_DATASETS"
GROUPS = ("near", "far")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# Training augmentations a suite may name (data.transforms implements them).
AUGMENTATIONS = ("random_crop", "hflip", "random_resized_crop")
# Checks a dataset entry against its source: source name -> check(spec, where). The data
# sources supply them (data.load_registry), so this module never imports data/.
SourceChecks = Mapping[str, Callable[["DatasetSpec", str], None]]


def _default_registry() -> Path:
    """The packaged datasets.yaml (a wheel carries a copy), else the repository's top-level one."""
    package = Path(__file__).resolve().parent.parent  # halo_bench/
    packaged = package / "datasets.yaml"
    return packaged if packaged.is_file() else package.parent / "datasets.yaml"


DEFAULT_REGISTRY = _default_registry()

_DATASET_KEYS = {"source", "description", "params", "splits", "classes", "generator", "homepage",
                 "download", "aliases"}
_SUITE_KEYS = {"description", "id", "near", "far", "data_config", "recipe", "arch_variant", "train_augment",
               "ood_val", "shift"}
# The sources of covariate-shifted ID sets (data/shift.py): a suite's `shift:` names datasets of these.
SHIFT_SOURCES = ("corrupted", "cifar-c", "imagenet-c")
_DATA_CONFIG_KEYS = {"input_size", "mean", "std", "interpolation", "crop_pct"}
# name -> (accepted types, check, what the check means)
_RECIPE_FIELDS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "epochs": ((int,), lambda v: v > 0, "a positive integer"),
    "batch_size": ((int,), lambda v: v > 0, "a positive integer"),
    "lr": ((int, float), lambda v: 0 < v <= MAX_LR, f"a positive number at most {MAX_LR:g}"),
    "momentum": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "nesterov": ((bool,), lambda v: True, "true or false"),
    "weight_decay": ((int, float), lambda v: 0 <= v <= MAX_WEIGHT_DECAY, f"a number in [0, {MAX_WEIGHT_DECAY:g}]"),
    "grad_clip": ((int, float, type(None)), lambda v: v is None or v > 0, "a positive number or null"),
    "warmup_epochs": ((int,), lambda v: v >= 0, "a non-negative integer"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: which source builds it, with what parameters, per split."""

    name: str
    source: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    generator: str | None = None
    homepage: str = ""
    download: str = ""  # how to get it, where no verified download exists ({root}, {name} filled in)
    aliases: tuple[str, ...] = ()

    def split_params(self, split: str) -> dict[str, Any]:
        """Source parameters for `split`: the shared ones, overridden by the split's own."""
        if split not in self.splits:
            raise HaloBenchError(
                f"dataset {self.name!r} has no {split!r} split (it has: {', '.join(self.splits)})."
            )
        return {**self.params, **self.splits[split]}

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "params": self.params,
            "splits": self.splits,
        }
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.generator is not None:
            out["generator"] = self.generator
        if self.aliases:
            out["aliases"] = list(self.aliases)
        return out


@dataclass(frozen=True)
class SuiteSpec:
    """An ID dataset, its near/far OOD sets (display name -> dataset) and defaults."""

    name: str
    id: str
    near: dict[str, str]
    far: dict[str, str]
    data_config: dict[str, Any]
    recipe: dict[str, Any]
    description: str = ""
    arch_variant: str | None = None  # e.g. "cifar": build resnet18 as timm's resnet18_cifar
    train_augment: tuple[str, ...] = ()
    # OOD-validation sets (display name -> dataset, read at its `val` split), set against the ID
    # dataset's `val` split for temperature scaling and --tune; never a test split.
    ood_val: dict[str, str] = field(default_factory=dict)
    # Covariate-shifted ID sets for `eval --shift`, in order of preference (the first present is read).
    shift: tuple[str, ...] = ()

    @property
    def has_validation(self) -> bool:
        return bool(self.ood_val)

    def ood_sets(self) -> dict[str, tuple[str, str]]:
        """Display name -> (group, dataset name), near sets first."""
        out = {name: ("near", key) for name, key in self.near.items()}
        out.update({name: ("far", key) for name, key in self.far.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "id": self.id,
            "near": self.near,
            "far": self.far,
            "data_config": self.data_config,
            "recipe": self.recipe,
            "arch_variant": self.arch_variant,
            "train_augment": list(self.train_augment),
            "ood_val": self.ood_val,
        }


@dataclass(frozen=True)
class Registry:
    datasets: dict[str, DatasetSpec]
    suites: dict[str, SuiteSpec]
    path: Path
    sha256: str

    def fingerprint(self, names: list[str]) -> str:
        """A digest of what the datasets `names` are (source, generator, parameters, splits,
        classes), whatever file defines them and whichever data root holds them: two evaluations
        with one fingerprint read the same data."""
        import json

        entries = {self.dataset(n).name: {k: v for k, v in self.dataset(n).to_dict().items()
                                          if k in ("source", "generator", "params", "splits", "classes")}
                   for n in names}
        return hashlib.sha256(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def dataset(self, name: str) -> DatasetSpec:
        """A dataset by name or alias (`textures` -> `dtd`)."""
        if name in self.datasets:
            return self.datasets[name]
        for spec in self.datasets.values():
            if name in spec.aliases:
                return spec
        raise unknown_name("dataset", name, self.names())

    def names(self) -> set[str]:
        """Every dataset name and alias."""
        return set(self.datasets) | {a for spec in self.datasets.values() for a in spec.aliases}

    def suite(self, name: str) -> SuiteSpec:
        if name not in self.suites:
            raise unknown_name("suite", name, self.suites)
        return self.suites[name]

    def resolve_ood(self, suite: SuiteSpec, names: list[str] | None) -> dict[str, tuple[str, str]]:
        """Pick OOD sets by display name, dataset name or group (`near`, `far`).

        With no names, the whole suite. A dataset (or alias) outside the suite is allowed
        (any OOD set can be used with any ID set); it is grouped as `far`.
        """
        members = suite.ood_sets()
        if not names:
            return members
        chosen: dict[str, tuple[str, str]] = {}
        by_key = {key: (display, group) for display, (group, key) in members.items()}
        for name in names:
            if name in GROUPS:
                chosen.update({d: gk for d, gk in members.items() if gk[0] == name})
            elif name in members:
                chosen[name] = members[name]
            elif name in self.names() and self.dataset(name).name != suite.id:
                key = self.dataset(name).name  # a dataset name or alias
                display, group = by_key.get(key, (name, "far"))
                chosen[display] = (group, key)
            else:
                known = set(members) | self.names() | set(GROUPS)
                raise unknown_name("OOD set", name, known - {suite.id})
        return chosen


class DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader`, except that a key given twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                continue
            # Compared as text: the registry turns every name into a string, so 1 and "1" collide.
            key = str(self.construct_object(key_node, deep=deep))
            line = key_node.start_mark.line + 1
            if key in first:
                raise DuplicateKey(f"key {key!r} appears twice in one mapping, at lines {first[key]} and {line}; "
                                   "keep one (YAML would silently use the last).")
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def registry_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The registry to read: `path`, else $HALO_BENCH_DATASETS, else the packaged file."""
    if path is not None:
        return Path(path)
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else DEFAULT_REGISTRY


def read_registry(sources: SourceChecks, path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate a dataset registry; `sources` checks each entry's source parameters.

    Use `halo_bench.data.load_registry`, which passes the data sources' checks.
    """
    path = registry_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HaloBenchError(f"dataset registry {path} does not exist.") from None
    except OSError as exc:
        raise HaloBenchError(f"cannot read dataset registry {path}: {exc.strerror}.") from None
    try:
        doc = yaml.load(raw, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except DuplicateKey as exc:
        raise HaloBenchError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise HaloBenchError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}.") from None
    datasets, suites = _validate(doc, str(path), sources)
    return Registry(datasets, suites, path, hashlib.sha256(raw).hexdigest())


def _fail(where: str, message: str) -> HaloBenchError:
    return HaloBenchError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping, got {type(value).__name__}.")
    return value


def _check_keys(entry: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")
    missing = sorted(required - set(entry))
    if missing:
        raise _fail(where, f"missing required key(s) {', '.join(missing)}.")


def _validate(doc: Any, where: str, sources: SourceChecks) -> tuple[dict[str, DatasetSpec], dict[str, SuiteSpec]]:
    doc = _mapping(doc, where)
    _check_keys(doc, {"version", "datasets", "suites"}, {"version", "datasets", "suites"}, where)
    if doc["version"] != 1:
        raise _fail(where, f"unsupported registry version {doc['version']!r} (this halo-bench reads 1).")
    datasets = {
        str(name): _dataset(str(name), entry, f"{where}: datasets.{name}", sources)
        for name, entry in _mapping(doc["datasets"], f"{where}: datasets").items()
    }
    seen: dict[str, str] = {}
    for spec in datasets.values():
        for alias in spec.aliases:
            if alias in datasets or alias in seen:
                other = seen.get(alias, alias)
                raise _fail(f"{where}: datasets.{spec.name}.aliases", f"{alias!r} already names dataset {other!r}.")
            seen[alias] = spec.name
    suites = {
        str(name): _suite(str(name), entry, f"{where}: suites.{name}", datasets)
        for name, entry in _mapping(doc["suites"], f"{where}: suites").items()
    }
    return datasets, suites


def _dataset(name: str, entry: Any, where: str, sources: SourceChecks) -> DatasetSpec:
    entry = _mapping(entry, where)
    _check_keys(entry, _DATASET_KEYS, {"source", "splits"}, where)
    for key in ("source", "generator", "description", "homepage", "download"):
        if key in entry and not isinstance(entry[key], str):
            raise _fail(f"{where}.{key}", f"expected a string, got {type(entry[key]).__name__}.")
    source = entry["source"]
    if source not in sources:
        raise _fail(where, str(unknown_name("source", str(source), sources)))
    params = _mapping(entry.get("params") or {}, f"{where}.params")
    splits = _mapping(entry["splits"], f"{where}.splits")
    if not splits:
        raise _fail(f"{where}.splits", "needs at least one split (e.g. test).")
    splits = {str(k): _mapping(v or {}, f"{where}.splits.{k}") for k, v in splits.items()}
    classes = entry.get("classes")
    if classes is not None:
        # A count stands for classes named by their index (ImageNet's 1000 need no listing).
        if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 2:
            classes = [str(i) for i in range(classes)]
        if not isinstance(classes, list) or len(classes) < 2:
            raise _fail(f"{where}.classes", "expected a list of at least two class names, or their number.")
        classes = tuple(str(c) for c in classes)
        twice = sorted(c for c, n in Counter(classes).items() if n > 1)
        if twice:  # two labels of one name: predictions of either read as the same class
            raise _fail(f"{where}.classes", f"class name(s) {', '.join(map(repr, twice))} appear more than once.")
    aliases = entry.get("aliases") or []
    if not (isinstance(aliases, list) and all(isinstance(a, str) for a in aliases)):
        raise _fail(f"{where}.aliases", "expected a list of names.")
    spec = DatasetSpec(
        name=name,
        source=source,
        description=str(entry.get("description", "")),
        params=params,
        splits=splits,
        classes=classes,
        generator=entry.get("generator"),
        homepage=str(entry.get("homepage", "")),
        download=str(entry.get("download", "")),
        aliases=tuple(aliases),
    )
    try:
        spec.download.format(root="ROOT", name=name)
    except (KeyError, IndexError, ValueError) as exc:
        raise _fail(f"{where}.download", f"only {{root}} and {{name}} may appear in braces ({exc!r}).") from None
    sources[source](spec, where)
    return spec


def _suite(name: str, entry: Any, where: str, datasets: dict[str, DatasetSpec]) -> SuiteSpec:
    entry = _mapping(entry, where)
    _check_keys(entry, _SUITE_KEYS, {"id", "far", "data_config", "recipe"}, where)
    id_name = entry["id"]
    if not isinstance(id_name, str) or id_name not in datasets:
        raise _fail(f"{where}.id", str(unknown_name("dataset", str(id_name), datasets)))
    id_spec = datasets[id_name]
    if id_spec.classes is None or not {"train", "test"} <= set(id_spec.splits):
        raise _fail(f"{where}.id", f"ID dataset {id_name!r} needs 'classes' and train and test splits.")
    groups = {}
    for group in GROUPS:
        members = _mapping(entry.get(group) or {}, f"{where}.{group}")
        for display, key in members.items():
            if not isinstance(key, str):
                raise _fail(f"{where}.{group}.{display}", "expected a dataset name.")
            if display == id_name or key == id_name:
                raise _fail(f"{where}.{group}.{display}", f"the ID dataset {id_name!r} cannot be an OOD set.")
            if key not in datasets:
                raise _fail(f"{where}.{group}.{display}", str(unknown_name("dataset", str(key), datasets)))
            if "test" not in datasets[key].splits:
                raise _fail(f"{where}.{group}.{display}", f"dataset {key!r} has no test split.")
        groups[group] = {str(k): str(v) for k, v in members.items()}
    clash = set(groups["near"]) & set(groups["far"])
    if clash:
        raise _fail(where, f"{', '.join(sorted(clash))} listed as both near and far.")
    tested = {**groups["near"], **groups["far"]}
    _one_name_each(tested, where)
    ood_val = {str(k): v for k, v in _mapping(entry.get("ood_val") or {}, f"{where}.ood_val").items()}
    for display, key in ood_val.items():
        if not isinstance(key, str) or key not in datasets:
            raise _fail(f"{where}.ood_val.{display}", str(unknown_name("dataset", str(key), datasets)))
        if key == id_name or "val" not in datasets[key].splits:
            raise _fail(f"{where}.ood_val.{display}", f"an OOD-validation set must be another dataset with a "
                        f"'val' split; {key!r} is not.")
        if tested.get(display, key) != key:  # results.json would name two datasets by one name
            raise _fail(f"{where}.ood_val.{display}", f"{display!r} names {tested[display]!r} among the OOD test "
                        f"sets; give {key!r} another name here.")
    _one_name_each(ood_val, f"{where}.ood_val")
    shift = _shift_sets(entry.get("shift"), f"{where}.shift", id_spec, datasets)
    if ood_val and "val" not in id_spec.splits:
        raise _fail(f"{where}.ood_val", f"OOD-validation sets need a 'val' split of the ID dataset {id_name!r}.")
    augment = entry.get("train_augment") or []
    if not (isinstance(augment, list) and all(a in AUGMENTATIONS for a in augment)):
        raise _fail(f"{where}.train_augment", f"expected a list of: {', '.join(AUGMENTATIONS)}.")
    variant = entry.get("arch_variant")
    if variant is not None and not isinstance(variant, str):
        raise _fail(f"{where}.arch_variant", "expected a name such as cifar.")
    return SuiteSpec(
        name=name,
        id=id_name,
        near=groups["near"],
        far=groups["far"],
        data_config=_data_config(entry["data_config"], f"{where}.data_config"),
        recipe=_recipe(entry["recipe"], f"{where}.recipe"),
        description=str(entry.get("description", "")),
        arch_variant=variant,
        train_augment=tuple(augment),
        ood_val=ood_val,
        shift=shift,
    )


def _shift_sets(value: Any, where: str, id_spec: DatasetSpec, datasets: dict[str, DatasetSpec]) -> tuple[str, ...]:
    """A suite's `shift:`: a dataset name or a list of them, each a shift set whose classes (where
    it names them) are the ID dataset's, so its labels mean the model's classes."""
    names = [value] if isinstance(value, str) else value or []
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise _fail(where, "expected a dataset name or a list of them, in order of preference.")
    for name in names:
        if name not in datasets:
            raise _fail(where, str(unknown_name("dataset", name, datasets)))
        spec = datasets[name]
        if spec.source not in SHIFT_SOURCES:
            raise _fail(where, f"{name!r} is a {spec.source} dataset, not a shift set (source one of "
                        f"{', '.join(SHIFT_SOURCES)}).")
        if spec.classes is not None and spec.classes != id_spec.classes:
            raise _fail(where, f"{name!r} has other classes than the ID dataset {id_spec.name!r}.")
    if len(set(names)) != len(names):
        raise _fail(where, "lists a dataset twice.")
    return tuple(names)


def _one_name_each(members: dict[str, str], where: str) -> None:
    """Display names and datasets one to one, and no display name `near` or `far`: those select
    groups, and a dataset under two names would count twice in its group's mean (and its
    dataset name would pick one of the two)."""
    by_dataset: dict[str, str] = {}
    for display, key in members.items():
        if display in GROUPS:
            raise _fail(where, f"display name {display!r} is a group name ({', '.join(GROUPS)}); choose another.")
        if key in by_dataset:
            raise _fail(where, f"dataset {key!r} is listed twice, as {by_dataset[key]!r} and {display!r}.")
        by_dataset[key] = display


def _data_config(entry: Any, where: str) -> dict[str, Any]:
    entry = _mapping(entry, where)
    _check_keys(entry, _DATA_CONFIG_KEYS, {"input_size", "mean", "std"}, where)
    size = entry["input_size"]
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        raise _fail(f"{where}.input_size", "expected [channels, height, width] as positive integers.")
    for key in ("mean", "std"):
        vals = entry[key]
        if not (isinstance(vals, list) and len(vals) == size[0] and all(isinstance(v, (int, float)) for v in vals)):
            raise _fail(f"{where}.{key}", f"expected {size[0]} number(s), one per channel.")
    if any(v <= 0 for v in entry["std"]):
        raise _fail(f"{where}.std", "every std must be positive.")
    crop_pct = entry.get("crop_pct", 1.0)
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
        raise _fail(f"{where}.crop_pct", f"expected a number in (0, 1], got {crop_pct!r}.")
    if entry.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise _fail(f"{where}.interpolation", f"expected one of {', '.join(INTERPOLATIONS)}.")
    return {
        "input_size": tuple(size),
        "mean": tuple(float(v) for v in entry["mean"]),
        "std": tuple(float(v) for v in entry["std"]),
        "interpolation": str(entry.get("interpolation", "bilinear")),
        "crop_pct": float(entry.get("crop_pct", 1.0)),
    }


def _recipe(entry: Any, where: str) -> dict[str, Any]:
    entry = _mapping(entry, where)
    _check_keys(entry, set(_RECIPE_FIELDS), set(_RECIPE_FIELDS), where)
    for key, (types, ok, meaning) in _RECIPE_FIELDS.items():
        value = entry[key]
        bad_type = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if bad_type or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise _fail(f"{where}.{key}", f"expected {meaning}, got {value!r}.")
    return dict(entry)
