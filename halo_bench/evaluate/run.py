"""Suite -> results: one forward pass per split, every detector, every metric.

`evaluate()` runs its stages in order: load the model (a halo-bench checkpoint or a
foreign classifier, `models.load`), plan what to read (the suite's sets, the detectors,
the evaluation's name), place the model (device, precision, memory format), the forward
passes (cached), the detectors (and `--tune`), the metrics, and the results document
(`results.ResultsDoc`), written with its scores file.

Writes `results.json` (numbers plus what produced them: checkpoint hash, suite,
datasets, detector settings, versions, command) and `scores.csv.gz` (one row per
sample, one column per detector) so every number can be recomputed from the scores.
With `shift` (eval --shift), the suite's covariate-shifted ID sets are evaluated too
(evaluate/shift.py) into the document's `shift` section; their per-sample scores are not
written (a CIFAR-10-C evaluation would add 700,000 rows), their passes are in the feature cache.
"""

from __future__ import annotations

import gzip
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.console import console
from ..core.devices import (
    amp_dtype,
    channels_last_format,
    dtype_name,
    environment,
    resolve_device,
)
from ..core.errors import HaloBenchError
from ..core.io import (
    atomic_write_bytes,
    atomic_write_json,
    folder_lock,
    sha256_bytes,
    utc_now,
)
from ..core.provenance import command_line
from ..core.runtime import Runtime
from ..data import (
    DatasetMissing,
    LoadOptions,
    default_workers,
    load_registry,
    load_split,
    resolve_data_root,
)
from ..data.registry import DatasetSpec, Registry, SuiteSpec
from ..detectors import Detector, DetectorContext, detectors_for
from ..features.cache import CACHE_DIR, CacheKey, FeatureCache
from ..features.passes import SplitOutputs, forward_pass
from ..models.load import Foreign, LoadedModel, load_model
from ..results import (
    GROUPS,
    METRICS_CONVENTIONS,
    RESULTS_SCHEMA,
    RESULTS_VERSION,
    ResultsDoc,
    data_variant,
    evaluation_name,
    results_file,
    scores_file,
)
from . import metrics
from .calibration import temperature_scaled_metrics
from .shift import ShiftPlan, clean_scores, evaluate_shift, plan_shift, summary_lines
from .tune import ValidationData, tune_detector


@dataclass
class EvalConfig(Runtime):
    """One evaluation: what to evaluate and how; the `Runtime` settings say where it runs
    (data root default: $HALO_BENCH_DATA, else the run's own)."""

    checkpoint: str
    ood: list[str] | None = None
    detectors: list[str] | None = None
    out: str | None = None  # default: the checkpoint's run directory
    batch_size: int = 256
    limit: int | None = None  # only the first N images of each split: a smoke run, marked partial
    model: str | None = None  # a foreign timm classifier: its architecture (with `suite`)
    suite: str | None = None  # the suite a foreign classifier is evaluated on
    use_ema: bool = False  # a foreign timm checkpoint's state_dict_ema
    cache: bool = True  # read and write forward passes in <checkpoint folder>/feature-cache
    tune: bool = False  # add NAME[tuned] rows: hyperparameters chosen on the suite's validation sets
    shift: list[str] | None = None  # also the shifted ID sets: all, standard, a family, corruption names
    severities: list[int] | None = None  # with shift: these severities (default 1-5)

    @property
    def foreign(self) -> Foreign | None:
        return Foreign(self.model, self.suite or "digits", self.use_ema) if self.model else None


@dataclass
class Plan:
    """What one evaluation reads and where it writes: the suite, its ID and OOD sets, the
    detectors, the data (root, transform) and the evaluation's name."""

    suite: SuiteSpec
    id_spec: DatasetSpec
    ood_sets: dict[str, tuple[str, str]]  # display name -> (group, dataset)
    detectors: list[Detector]
    name: str  # '' for the default evaluation (results.evaluation_name)
    data_config: dict[str, Any]
    options: LoadOptions
    out_dir: Path
    shift: ShiftPlan | None = None
    data_fingerprint: str = ""  # Registry.fingerprint of every dataset the evaluation reads


@dataclass
class Placement:
    """Where the model runs: device, autocast dtype, memory format, DataLoader workers."""

    device: Any
    dtype: Any
    memory_format: Any
    workers: int

    @property
    def precision(self) -> str | None:
        return dtype_name(self.dtype)


@dataclass
class Passes:
    """Every forward pass one evaluation needs, each run once (or read from the cache)."""

    splits: dict[str, tuple[str, Any]]  # display name -> (group, dataset), the ID test set first
    outputs: dict[str, SplitOutputs]
    train: SplitOutputs | None
    validation: ValidationData | None
    cache: FeatureCache
    timing: dict[str, float] = field(default_factory=dict)
    run: Callable[[DatasetSpec, str, Any, str], SplitOutputs] | None = None  # (spec, split, dataset, what): cached


def evaluate(cfg: EvalConfig, registry: Registry | None = None) -> tuple[ResultsDoc, Path]:
    """Evaluate a checkpoint on its suite; returns the results and the results file's path."""
    registry = registry or load_registry()
    loaded = load_model(cfg.checkpoint, registry, cfg.foreign)
    plan = plan_evaluation(cfg, loaded, registry)
    place = place_model(loaded.model, cfg, plan.id_spec)
    passes = run_passes(cfg, plan, loaded, place, registry)
    ctx = DetectorContext(model=loaded.model, device=place.device, data_config=plan.data_config,
                          batch_size=cfg.batch_size, num_workers=place.workers, amp_dtype=place.dtype,
                          memory_format=place.memory_format, pipeline=cfg.data_pipeline, train=passes.train)
    scores = score_detectors(cfg, plan, passes, ctx)
    shift = shift_section(cfg, plan, loaded, passes, scores, ctx)
    doc = results_document(cfg, plan, loaded, place, passes, scores, registry, shift)
    return doc, write_results(plan, doc, _scores_bytes(passes, scores, loaded.model.num_classes))


def plan_evaluation(cfg: EvalConfig, loaded: LoadedModel, registry: Registry) -> Plan:
    """The suite the model was trained on (checked against the registry), its sets, the
    detectors that apply, and the name the evaluation's files carry."""
    meta = loaded.meta
    if meta["suite"]["name"] not in registry.suites:
        raise HaloBenchError(
            f"{loaded.checkpoint} was trained on suite {meta['suite']['name']!r}, which {registry.path} does not "
            f"define; pass the registry it was trained with: --registry {meta['registry']['path']}."
        )
    suite = registry.suite(meta["suite"]["name"])
    id_spec = registry.dataset(suite.id)
    if list(id_spec.classes or ()) != meta["classes"]:
        raise HaloBenchError(
            f"the registry's {suite.id!r} classes {list(id_spec.classes or ())} differ from the "
            f"checkpoint's {meta['classes']}; evaluate with the registry it was trained with "
            f"({meta['registry']['path']})."
        )
    if cfg.tune and not suite.ood_val:
        raise HaloBenchError(
            f"--tune needs validation data, and suite {suite.name!r} has none (an ID 'val' split and "
            "'ood_val' sets in the registry); tuning on test data would inflate the numbers. Use a suite "
            "with validation sets (digits, cifar10-openood, cifar100-openood) or drop --tune."
        )
    ood_sets = registry.resolve_ood(suite, cfg.ood)
    # Default: $HALO_BENCH_DATA, else the data root the run was trained from if it is here, else ./data.
    trained_from = meta.get("data_root") if meta.get("data_root") and Path(meta["data_root"]).is_dir() else None
    options = LoadOptions(resolve_data_root(cfg.data_root, fallback=trained_from))
    shift = (plan_shift(cfg.shift, cfg.severities, registry, suite, meta["data_config"], options.data_root)
             if cfg.shift else None)
    # Other detectors, sets, limits, settings or data: written beside the default evaluation, never over it.
    name = evaluation_name(cfg.detectors, None if ood_sets == suite.ood_sets() else list(ood_sets), cfg.limit,
                           cfg.tune, cfg.amp, shift.name if shift else None)
    if cfg.limit:
        console.print(f"[yellow]partial evaluation:[/] only the first {cfg.limit} images of each split (--limit); "
                      "the results are marked partial and kept out of reports' tables.")
    out_dir = (Path(cfg.out) if cfg.out else Path("runs") / meta["run"] if cfg.model
               else loaded.checkpoint.parent)
    read = [suite.id, *(key for _, key in ood_sets.values()), *(suite.ood_val.values() if cfg.tune else ())]
    return Plan(suite, id_spec, ood_sets, detectors_for(cfg.detectors, loaded.model.abstain), name,
                meta["data_config"], options, out_dir, shift, registry.fingerprint(read))


def place_model(model: Any, cfg: EvalConfig, id_spec: DatasetSpec) -> Placement:
    """Move the model to its device and memory format; autocast where the device has it."""
    device = resolve_device(cfg.device)
    model.to(device)
    memory_format = channels_last_format(device, cfg.channels_last)
    if memory_format is not None:
        model.to(memory_format=memory_format)
    return Placement(device, amp_dtype(device, cfg.amp), memory_format, default_workers(id_spec, cfg.num_workers))


def load_splits(cfg: EvalConfig, plan: Plan, registry: Registry) -> dict[str, tuple[str, Any]]:
    """Every test split the detectors read: the ID test set first, then each OOD set, all
    through the ID set's evaluation transform; every missing set is named at once."""
    splits: dict[str, tuple[str, Any]] = {}
    missing = []
    for display, (group, key) in {plan.suite.id: ("id", plan.suite.id), **plan.ood_sets}.items():
        try:
            dataset = load_split(registry.dataset(key), "test", plan.data_config, plan.options)
            splits[display] = (group, _first(dataset, cfg.limit))
        except DatasetMissing as exc:
            missing.append(str(exc))
    if missing:
        raise DatasetMissing(f"{len(missing)} dataset(s) missing:\n" + "\n".join(f"- {m}" for m in missing))
    return splits


def run_passes(cfg: EvalConfig, plan: Plan, loaded: LoadedModel, place: Placement, registry: Registry) -> Passes:
    """One forward pass per split (test sets; ID train when a detector fits; ID val, and with
    --tune the OOD-val sets), each read from the feature cache when it holds it."""
    splits = load_splits(cfg, plan, registry)
    # A --limit smoke run neither reads nor writes the cache: its passes cover part of a split.
    cache = FeatureCache(loaded.checkpoint.parent / CACHE_DIR if cfg.cache and not cfg.limit else None)

    def run(spec: DatasetSpec, split: str, dataset: Any, description: str) -> SplitOutputs:
        source = {"source": spec.source, "generator": spec.generator, "params": spec.split_params(split)}
        cache_key = CacheKey(loaded.model_key, spec.name, split, source, str(plan.options.data_root), plan.data_config,
                             place.precision)
        return cache.get(cache_key, lambda: forward_pass(
            loaded.model, dataset, place.device, cfg.batch_size, place.dtype, description, place.workers,
            data_config=plan.data_config, pipeline=cfg.data_pipeline, memory_format=place.memory_format),
            len(dataset))

    def one_pass(key: str, split: str, dataset: Any, description: str) -> SplitOutputs:
        return run(registry.dataset(key), split, dataset, description)

    train_set = None
    if any(d.needs_train for d in plan.detectors):  # eval transform: the fits read clean features
        train_set = _first(load_split(plan.id_spec, "train", plan.data_config, plan.options), cfg.limit)
        for det in plan.detectors:  # settings the split cannot serve fail before any pass
            det.check_fit_size(len(train_set))
    started = time.perf_counter()
    outputs = {name: one_pass(_dataset_key(name, plan), "test", dataset, f"forward {name}")
               for name, (_, dataset) in splits.items()}
    train = None
    if train_set is not None:
        train = one_pass(plan.suite.id, "train", train_set, f"forward {plan.suite.id} (train)")
    validation = None
    if "val" in plan.id_spec.splits:  # temperature scaling always; --tune also reads the OOD-val sets
        id_val = load_split(plan.id_spec, "val", plan.data_config, plan.options)
        ood_val = {}
        if cfg.tune:
            for display, key in plan.suite.ood_val.items():
                ds = load_split(registry.dataset(key), "val", plan.data_config, plan.options)
                ood_val[display] = (one_pass(key, "val", ds, f"forward {display} (val)"), ds)
        validation = ValidationData(one_pass(plan.suite.id, "val", id_val, f"forward {plan.suite.id} (val)"),
                                    id_val, ood_val)
    return Passes(splits, outputs, train, validation, cache, {"forward_passes": time.perf_counter() - started}, run)


def score_detectors(cfg: EvalConfig, plan: Plan, passes: Passes, ctx: DetectorContext
                    ) -> dict[str, dict[str, np.ndarray]]:
    """split -> detector label -> scores; with --tune, NAME[tuned] detectors are added to
    `plan.detectors` and scored too (only ODIN runs the model again)."""
    scores: dict[str, dict[str, np.ndarray]] = {name: {} for name in passes.splits}

    def score(det: Detector) -> None:
        started = time.perf_counter()
        if det.needs_train:
            det.fit(ctx)
        for name, (_, dataset) in passes.splits.items():
            scores[name][det.label] = det.score(replace(ctx, split=name), passes.outputs[name], dataset)
        passes.timing[f"detector_{det.label}"] = time.perf_counter() - started

    for det in plan.detectors:
        score(det)
    if cfg.tune:
        assert passes.validation is not None
        for det in list(plan.detectors):
            tuned = tune_detector(det, ctx, passes.validation)
            if tuned is not None:
                score(tuned)
                plan.detectors.append(tuned)
    return scores


def shift_section(cfg: EvalConfig, plan: Plan, loaded: LoadedModel, passes: Passes,
                  scores: dict[str, dict[str, np.ndarray]], ctx: DetectorContext) -> dict[str, Any] | None:
    """The covariate-shift section (`eval --shift`, evaluate/shift.py), its timing into `passes`."""
    if plan.shift is None:
        return None
    assert passes.run is not None
    validation = passes.validation.id_outputs if passes.validation is not None else None
    clean = clean_scores(passes.outputs, scores, plan.suite.id, plan.ood_sets, loaded.model.num_classes, validation)
    section, timing = evaluate_shift(
        plan.shift, plan.id_spec, plan.detectors, ctx, clean,
        lambda spec, dataset: passes.run(spec, "test", dataset, f"forward {spec.name}"), plan.options,
        lambda dataset: _first(dataset, cfg.limit))
    passes.timing.update(timing)
    return section


def id_metrics(passes: Passes, suite_id: str, num_classes: int) -> dict[str, float]:
    """Accuracy and calibration on the ID test set, raw and after temperature scaling
    fitted on ID validation (where the suite has it)."""
    id_out = passes.outputs[suite_id]
    probs = id_out.logits.double().softmax(dim=1).numpy()
    out = metrics.id_metrics(probs, id_out.labels.numpy(), num_classes)
    if passes.validation is not None:  # the one-scalar calibration baseline
        val = passes.validation.id_outputs
        out.update(temperature_scaled_metrics(val.logits, val.labels, id_out.logits, id_out.labels, num_classes))
    return out


def ood_metrics(plan: Plan, scores: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per detector: every metric per OOD set (ID test as positives) and near/far means."""
    out: dict[str, Any] = {}
    for det in plan.detectors:
        per_set = {}
        for display, (group, _) in plan.ood_sets.items():
            values = metrics.ood_metrics(scores[plan.suite.id][det.label], scores[display][det.label])
            per_set[display] = {"group": group, **values}
        out[det.label] = {"sets": per_set, **metrics.group_means(per_set, GROUPS, metrics.OOD_METRICS)}
    return out


def results_document(cfg: EvalConfig, plan: Plan, loaded: LoadedModel, place: Placement, passes: Passes,
                     scores: dict[str, dict[str, np.ndarray]], registry: Registry,
                     shift: dict[str, Any] | None = None) -> ResultsDoc:
    """The results contract (`results.ResultsDoc`): the numbers and what produced them."""
    meta, suite, validation = loaded.meta, plan.suite, passes.validation
    model = meta["model"]
    doc = ResultsDoc(
        schema=RESULTS_SCHEMA, schema_version=RESULTS_VERSION, created=utc_now(), run=meta["run"],
        evaluation={"id": uuid.uuid4().hex, "name": plan.name or "default"},
        command=command_line(),
        checkpoint={"path": str(loaded.checkpoint), "sha256": loaded.sha256, "epochs": meta.get("epochs_done"),
                    "complete": meta.get("complete")},
        partial={"limit": cfg.limit} if cfg.limit else None,
        model={"name": model["name"], "arch": model.get("arch"), "loss": model["loss"],
               "embed_dim": model["embed_dim"], "head": model["head"]},
        loss=meta.get("loss", {"name": model["loss"], "tag": model["loss"]}),
        seed=meta["train_config"]["seed"], train_config=meta["train_config"], weights=meta.get("weights"),
        suite=suite.name, id_dataset=suite.id, data_config=plan.data_config, data_root=str(plan.options.data_root),
        registry={"path": str(registry.path), "sha256": registry.sha256}, train_registry=meta["registry"],
        data_fingerprint=plan.data_fingerprint,
        eval_config={**asdict(cfg), "amp_dtype": place.precision, "num_workers": place.workers},
        datasets={name: {"group": group, "dataset": _dataset_key(name, plan), "n": len(passes.outputs[name])}
                  for name, (group, _) in passes.splits.items()},
        validation=None if validation is None else {
            "id": {"dataset": suite.id, "split": "val", "n": len(validation.id_outputs)},
            "ood": {display: {"dataset": suite.ood_val[display], "split": "val", "n": len(out)}
                    for display, (out, _) in validation.ood.items()},
            "used_for": ["temperature scaling"] + (["--tune"] if cfg.tune else []),
        },
        detectors={det.label: det.settings() for det in plan.detectors},
        metrics_conventions=METRICS_CONVENTIONS,
        id_metrics=id_metrics(passes, suite.id, loaded.model.num_classes),
        ood=ood_metrics(plan, scores),
        feature_cache={"folder": str(passes.cache.folder) if passes.cache.folder else None,
                       "read": passes.cache.hits, "computed": passes.cache.misses},
        device=str(place.device),
        timing_seconds={key: round(value, 3) for key, value in passes.timing.items()},
        versions=environment(place.device),
        scores_file={"name": scores_file(plan.name), "sha256": ""},
    )
    if shift is not None:  # only an `eval --shift` has the section: every other document stays as it was
        doc["shift"] = shift
    return doc


def write_results(plan: Plan, doc: ResultsDoc, scores_bytes: bytes) -> Path:
    """Write the scores file, then the results naming its hash (a kill in between leaves a
    pair the report recognises as mismatched, never a silent one), under the output
    folder's evaluation lock."""
    doc["scores_file"]["sha256"] = sha256_bytes(scores_bytes)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(plan.out_dir, "eval", lock_name=".halo-bench-eval.lock", wait=True):
        name = plan.name
        old = _written(plan.out_dir / results_file(name))
        if old.get("data_fingerprint") not in (None, "", plan.data_fingerprint):
            name = data_variant(name, plan.data_fingerprint)  # beside the evaluation on the other data
            console.print(f"note: {results_file(plan.name)} evaluates datasets defined otherwise (another "
                          f"registry); this evaluation is written beside it as {results_file(name)}.", markup=False)
            doc["evaluation"]["name"], doc["scores_file"]["name"] = name, scores_file(name)
            old = _written(plan.out_dir / results_file(name))
        results_path = plan.out_dir / results_file(name)
        _note_replaced(results_path, old, doc["checkpoint"]["sha256"])
        atomic_write_bytes(plan.out_dir / scores_file(name), scores_bytes)
        atomic_write_json(results_path, doc)
    return results_path


def _written(path: Path) -> dict[str, Any]:
    """The evaluation already written at `path` ({} where there is none or it cannot be read)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _note_replaced(path: Path, old: dict[str, Any], checkpoint_sha: str) -> None:
    """Say what the evaluation of the same name about to be replaced (`old`, as read) was."""
    try:
        old_sha, created = old["checkpoint"]["sha256"], old["created"]
    except (KeyError, TypeError):
        return
    same = "the same checkpoint" if old_sha == checkpoint_sha else f"an earlier checkpoint (sha256 {old_sha[:12]}...)"
    console.print(f"{path.name}: replaces the evaluation of {same} with the same settings, made {created}.",
                  markup=False)


def _first(dataset: Any, limit: int | None) -> Any:
    """The first `limit` samples of a dataset (all of them without a limit)."""
    if limit is None or limit >= len(dataset):
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(limit))


def _dataset_key(name: str, plan: Plan) -> str:
    return plan.suite.id if name == plan.suite.id else plan.ood_sets[name][1]


def _scores_bytes(passes: Passes, scores: dict[str, dict[str, np.ndarray]], num_classes: int) -> bytes:
    """scores.csv.gz's bytes: one row per sample, one column per detector."""
    frames = []
    for name, (group, _) in passes.splits.items():
        out = passes.outputs[name]
        frame = pd.DataFrame({
            "dataset": name,
            "group": group,
            "index": np.arange(len(out)),
            "label": out.labels.numpy(),
            "pred": out.logits[:, :num_classes].argmax(dim=1).numpy(),
        })
        for det_name, values in scores[name].items():
            frame[det_name] = values
        frames.append(frame)
    text = pd.concat(frames, ignore_index=True).to_csv(index=False, float_format="%.17g")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:  # mtime=0: same scores, same bytes
        gz.write(text.encode())
    return buffer.getvalue()


def summarize(results: ResultsDoc) -> str:
    """A few lines for the terminal: accuracy, ECE and near/far AUROC per detector."""
    idm = results["id_metrics"]
    lines = [f"{results['run']}: acc {idm['acc']:.2f}%  ECE {idm['ece']:.4f}  NLL {idm['nll']:.4f}"
             + (f"  (temperature-scaled, T {idm['ts_temperature']:.3g}: ECE {idm['ts_ece']:.4f}  NLL "
                f"{idm['ts_nll']:.4f})" if "ts_temperature" in idm else "")]
    for name, res in results["ood"].items():
        parts = [f"{g} AUROC {res[g]['auroc']:.2f} FPR95 {res[g]['fpr95']:.2f}" for g in ("near", "far") if g in res]
        chosen = results.get("detectors", {}).get(name, {}).get("tuning", {}).get("chosen")
        parts += [", ".join(f"{k}={v:g}" for k, v in chosen.items())] if chosen else []
        lines.append(f"  {name:<14} " + "  ".join(parts))
    if results.get("shift"):
        lines += summary_lines(results["shift"], results.get("timing_seconds", {}))
    return "\n".join(lines)
