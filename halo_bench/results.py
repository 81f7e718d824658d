"""The results format: the one contract between evaluation (which writes it) and
reporting (which reads it). A typed, versioned document (`ResultsDoc`), the names of an
evaluation's files, and the check every reader runs. No torch.

Version history: 1 (halo-bench 0.1); 2 adds `evaluation` (id and name), `command` and a
hashed `scores_file` (docs/integrity.md). Version 1 files are read as they are. An
`eval --shift` document (version 2) also has a `shift` section (docs/protocol.md, section 7);
no reader requires it, so files without it read as before.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, TypedDict

from .core.errors import HaloBenchError

RESULTS_SCHEMA = "halo-bench/results"
RESULTS_VERSION = 2  # 2: `evaluation` and a hashed `scores_file`; version 1 files are still read
READABLE_VERSIONS = (1, 2)
RESULTS_FILE = "results.json"
SCORES_FILE = "scores.csv.gz"
RESULTS_GLOB = "results*.json"  # the default evaluation's file and every named one beside it
GROUPS = ("near", "far")
_MAX_NAME = 60


def evaluation_name(detectors: list[str] | None = None, ood: list[str] | None = None, limit: int | None = None,
                    tune: bool = False, amp: bool = True, shift: str | None = None) -> str:
    """The name an evaluation's files carry: '' for the default one (every detector that
    applies, the whole suite, full splits, no --tune, default precision, no --shift), else what
    differs, e.g. `det-knn-k10+odin`, `ood-noise`, `limit50`, `tune`, `shift` (`shift-noise-sev5`
    for a part of it). Evaluations with other settings are written beside the default one, never
    over it (docs/integrity.md); one on other data, beside it too (`data_variant`)."""
    parts = []
    if detectors:
        parts.append("det-" + "+".join(_slug(d) for d in detectors))
    if ood:
        parts.append("ood-" + "+".join(_slug(o) for o in sorted(ood)))
    if limit is not None:
        parts.append(f"limit{limit}")
    if tune:
        parts.append("tune")
    if not amp:
        parts.append("noamp")
    if shift:
        parts.append("+".join(_slug(part) for part in shift.split("+")))
    name = "_".join(parts)
    if len(name) > _MAX_NAME:  # a long detector list: keep it readable, unique by its digest
        name = name[: _MAX_NAME - 11] + "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return name


def data_variant(name: str, fingerprint: str) -> str:
    """The name of an evaluation like `name` but on other data (datasets defined otherwise than
    in the evaluation already written under `name`): `NAME_data-1a2b3c4d`."""
    return "_".join(part for part in (name, f"data-{fingerprint[:8]}") if part)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def results_file(name: str) -> str:
    """`results.json` for the default evaluation, `results-NAME.json` for a named one."""
    return f"results-{name}.json" if name else RESULTS_FILE


def scores_file(name: str) -> str:
    return f"scores-{name}.csv.gz" if name else SCORES_FILE


class CheckpointRef(TypedDict):
    path: str
    sha256: str  # of the bytes the model was loaded from
    epochs: int | None
    complete: bool | None


class OODResult(TypedDict, total=False):
    sets: dict[str, dict[str, Any]]  # OOD set -> {"group": near|far, auroc, fpr95, fpr95_openood, aupr_in, aupr_out}
    near: dict[str, float]  # unweighted means over the near sets
    far: dict[str, float]


class ResultsDoc(TypedDict, total=False):
    """One evaluation of one checkpoint: what `results*.json` holds. The numbers (`id_metrics`,
    `ood`) and everything that produced them."""

    schema: str
    schema_version: int
    created: str  # UTC, ISO 8601
    run: str
    evaluation: dict[str, str]  # id (unique per evaluation), name ('default' or results_file's NAME)
    command: str | None  # the halo-bench command line, when it came from one
    checkpoint: CheckpointRef
    partial: dict[str, int] | None  # {"limit": N} for an `eval --limit N` smoke run
    model: dict[str, Any]  # name, arch, loss, embed_dim, head
    loss: dict[str, Any]  # name, label, tag, knobs, changed
    seed: int
    train_config: dict[str, Any]
    weights: dict[str, Any] | None  # what was loaded with --pretrained / --init-from
    suite: str
    id_dataset: str
    data_config: dict[str, Any]
    data_root: str
    registry: dict[str, str]  # path, sha256 (this evaluation's)
    data_fingerprint: str  # Registry.fingerprint of the datasets read (absent from older files)
    train_registry: dict[str, str]  # the one the run was trained with
    eval_config: dict[str, Any]
    datasets: dict[str, dict[str, Any]]  # display name -> group, dataset, n
    validation: dict[str, Any] | None
    detectors: dict[str, dict[str, Any]]  # label -> settings (params, reads, tuning, ...)
    metrics_conventions: dict[str, Any]
    id_metrics: dict[str, float]
    ood: dict[str, OODResult]  # detector label -> per set and near/far means
    feature_cache: dict[str, Any]
    device: str
    timing_seconds: dict[str, float]
    versions: dict[str, Any]
    scores_file: dict[str, str]  # name, sha256 (version 1: the file name alone)
    # `eval --shift` only (absent from other evaluations and older files): per corruption and
    # severity of the shift set, ID metrics, rejection rates and FSOOD metrics (evaluate/shift.py)
    shift: dict[str, Any] | None


METRICS_CONVENTIONS = {
    "score": "higher = more in-distribution",
    "fpr95": "ID positive: fraction of OOD with score >= the threshold keeping 95% of ID",
    "fpr95_openood": "OOD positive: roc_curve(is_ood, -score, drop_intermediate=False), first tpr >= 0.95",
    "ood_units": "percent",
    "ece_bins": 15,
}
# field -> accepted types, for the fields every reader relies on
_REQUIRED: dict[str, tuple[type, ...]] = {
    "run": (str,), "suite": (str,), "seed": (int,), "created": (str,), "model": (dict,), "id_metrics": (dict,),
    "ood": (dict,), "checkpoint": (dict,), "id_dataset": (str,),
}


def check_results(doc: Any, path: str | Path) -> ResultsDoc:
    """A results document of a version this halo-bench reads, with the fields and types a
    report relies on, or a clear error naming the file and the version."""
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
        raise HaloBenchError(f"{path}: not a halo-bench results file (no schema {RESULTS_SCHEMA!r}).")
    if doc.get("schema_version") not in READABLE_VERSIONS:
        raise HaloBenchError(f"{path}: results schema version {doc.get('schema_version')!r}; this halo-bench "
                             f"reads versions {', '.join(map(str, READABLE_VERSIONS))}. Re-run `halo-bench eval` on "
                             "its checkpoint.")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise HaloBenchError(f"{path}: results file (version {doc['schema_version']}) lacks {', '.join(missing)}.")
    wrong = [k for k, types in _REQUIRED.items() if not isinstance(doc[k], types) or isinstance(doc[k], bool)]
    if wrong:
        raise HaloBenchError(f"{path}: results file (version {doc['schema_version']}) has malformed "
                             f"{', '.join(wrong)}.")
    for name, metrics in [("id_metrics", doc["id_metrics"]), *((f"ood.{d}", r) for d, r in doc["ood"].items())]:
        if not isinstance(metrics, dict):
            raise HaloBenchError(f"{path}: results file has malformed {name}.")
    return doc  # type: ignore[return-value]


def scores_reference(doc: dict[str, Any], results_path: str | Path) -> tuple[Path, str | None]:
    """(the scores file beside a results file, the SHA-256 it must have; None for version 1
    files, which recorded none)."""
    entry = doc.get("scores_file")
    if isinstance(entry, dict):
        return Path(results_path).with_name(str(entry.get("name", SCORES_FILE))), entry.get("sha256")
    return Path(results_path).with_name(SCORES_FILE), None


# What `halo-bench report --format` writes (halo_bench/report/render.py renders each); named here so
# the CLI checks a format before pandas and the renderers load.
REPORT_FORMATS = ("markdown", "csv", "json", "latex", "html")
# How a report controls its multiple comparisons (report/findings.py): Benjamini-Hochberg, Holm, none.
ADJUSTMENTS = ("bh", "holm", "none")


def check_report_format(fmt: str, adjust: str = "bh") -> None:
    from .core.errors import unknown_name

    if fmt not in REPORT_FORMATS:
        raise unknown_name("report format", fmt, REPORT_FORMATS)
    if adjust not in ADJUSTMENTS:
        raise unknown_name("multiple-comparisons adjustment", adjust, ADJUSTMENTS)
