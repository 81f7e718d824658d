"""Suite -> results: one forward pass per split, every detector, every metric.

Writes `results.json` (numbers plus what produced them: checkpoint hash, suite,
datasets, detector settings, versions) and `scores.csv.gz` (one row per sample,
one column per detector) so every number can be recomputed from the scores.
"""

from __future__ import annotations

import gzip
import io
import time
import uuid
from dataclasses import asdict, dataclass
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
from ..data import (
    DatasetMissing,
    LoadOptions,
    default_workers,
    load_registry,
    load_split,
    resolve_data_root,
)
from ..data.registry import Registry
from ..detectors import DetectorContext, detectors_for
from ..features.cache import CACHE_DIR, CacheKey, FeatureCache
from ..features.passes import SplitOutputs, forward_pass
from ..models.checkpoint import load_checkpoint
from ..results import (
    GROUPS,
    RESULTS_SCHEMA,
    RESULTS_VERSION,
    evaluation_name,
    results_file,
    scores_file,
)
from ..train.runs import checkpoint_path
from . import metrics
from .calibration import temperature_scaled_metrics
from .tune import ValidationData, tune_detector


@dataclass
class EvalConfig:
    checkpoint: str
    ood: list[str] | None = None
    detectors: list[str] | None = None
    out: str | None = None  # default: the checkpoint's run directory
    device: str = "auto"
    batch_size: int = 256
    amp: bool = True
    data_root: str | None = None  # default: $HALO_BENCH_DATA, else the run's data root
    num_workers: int | None = None  # default: 0 for in-memory data, up to 8 for image files
    data_pipeline: str = "auto"  # in-memory arrays served from a GPU (halo_bench/data/device.py)
    channels_last: bool = True  # on CUDA
    limit: int | None = None  # only the first N images of each split: a smoke run, marked partial
    model: str | None = None  # a foreign timm classifier: its architecture (with `suite`)
    suite: str | None = None  # the suite a foreign classifier is evaluated on
    use_ema: bool = False  # a foreign timm checkpoint's state_dict_ema
    cache: bool = True  # read and write forward passes in <checkpoint folder>/feature-cache
    tune: bool = False  # add NAME[tuned] rows: hyperparameters chosen on the suite's validation sets


def evaluate(cfg: EvalConfig, registry: Registry | None = None) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on its suite; returns the results and the results.json path."""
    ckpt_path = checkpoint_path(cfg.checkpoint)
    if cfg.model:  # a classifier trained elsewhere, evaluated as it is (halo_bench/foreign.py)
        from ..models.foreign import foreign_run

        registry = registry or load_registry()
        model, meta = foreign_run(ckpt_path, cfg.model, cfg.suite or "digits", registry, cfg.use_ema)
        console.print(model.weights_report.summary(), markup=False)
    else:
        model, meta = load_checkpoint(ckpt_path)
    if not meta.get("complete"):
        epochs = meta.get("train_config", {}).get("epochs")
        console.print(f"[yellow]warning:[/] {ckpt_path} is an unfinished run (epoch {meta.get('epochs_done')} of "
                      f"{epochs}); a report leaves its results out unless --include-incomplete.")
    registry = registry or load_registry()
    if meta["suite"]["name"] not in registry.suites:
        raise HaloBenchError(
            f"{ckpt_path} was trained on suite {meta['suite']['name']!r}, which {registry.path} does not "
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
    ood_sets = registry.resolve_ood(suite, cfg.ood)
    detectors = detectors_for(cfg.detectors, model.abstain)
    # Other detectors, sets, limits or settings: written beside the default evaluation, never over it.
    eval_name = evaluation_name(cfg.detectors, None if ood_sets == suite.ood_sets() else list(ood_sets), cfg.limit,
                           cfg.tune, cfg.amp)
    if cfg.limit:
        console.print(f"[yellow]partial evaluation:[/] only the first {cfg.limit} images of each split (--limit); "
                      "the results are marked partial and kept out of reports' tables.")
    if cfg.tune and not suite.ood_val:
        raise HaloBenchError(
            f"--tune needs validation data, and suite {suite.name!r} has none (an ID 'val' split and "
            "'ood_val' sets in the registry); tuning on test data would inflate the numbers. Use a suite "
            "with validation sets (digits, cifar10-openood, cifar100-openood) or drop --tune."
        )
    data_config = meta["data_config"]  # the transform the model was trained with
    device = resolve_device(cfg.device)
    dtype = amp_dtype(device, cfg.amp)
    model.to(device)
    memory_format = channels_last_format(device, cfg.channels_last)
    if memory_format is not None:
        model.to(memory_format=memory_format)

    # Every split the detectors read: the ID test set first, then each OOD set, all
    # through the ID set's evaluation transform.
    # Default: $HALO_BENCH_DATA, else the data root the run was trained from if it is here, else ./data.
    trained_from = meta.get("data_root") if meta.get("data_root") and Path(meta["data_root"]).is_dir() else None
    options = LoadOptions(resolve_data_root(cfg.data_root, fallback=trained_from))
    splits: dict[str, tuple[str, Any]] = {}
    missing = []
    for display, (group, key) in {suite.id: ("id", suite.id), **ood_sets}.items():
        try:
            splits[display] = (group, _first(load_split(registry.dataset(key), "test", data_config, options),
                                             cfg.limit))
        except DatasetMissing as exc:  # name every missing set at once, not one per attempt
            missing.append(str(exc))
    if missing:
        raise DatasetMissing(f"{len(missing)} dataset(s) missing:\n" + "\n".join(f"- {m}" for m in missing))

    workers = default_workers(id_spec, cfg.num_workers)
    timing: dict[str, float] = {}
    outputs: dict[str, SplitOutputs] = {}
    # The hash of the bytes the model was loaded from (read once): what the cache and results are keyed by.
    checkpoint_sha = meta.get("checkpoint_sha256") or model.weights_report.sha256
    # A --limit smoke run neither reads nor writes the cache: its passes cover part of a split.
    cache = FeatureCache(ckpt_path.parent / CACHE_DIR if cfg.cache and not cfg.limit else None)
    precision = dtype_name(dtype)

    def one_pass(key: str, split: str, dataset: Any, description: str) -> SplitOutputs:
        spec = registry.dataset(key)
        source = {"source": spec.source, "generator": spec.generator, "params": spec.split_params(split)}
        cache_key = CacheKey(checkpoint_sha, key, split, source, str(options.data_root), data_config, precision)
        return cache.get(cache_key, lambda: forward_pass(model, dataset, device, cfg.batch_size, dtype,
                                                          description, workers, data_config=data_config,
                                                          pipeline=cfg.data_pipeline,
                                                          memory_format=memory_format), len(dataset))

    started = time.perf_counter()
    for name, (_, dataset) in splits.items():
        outputs[name] = one_pass(_dataset_key(name, suite.id, ood_sets), "test", dataset, f"forward {name}")
    train_outputs = None
    if any(d.needs_train for d in detectors):  # eval transform: the fits read clean features
        train_outputs = one_pass(suite.id, "train", _first(load_split(id_spec, "train", data_config, options),
                                                           cfg.limit), f"forward {suite.id} (train)")
    validation = None
    if "val" in id_spec.splits:  # temperature scaling always; --tune also reads the OOD-val sets
        id_val = load_split(id_spec, "val", data_config, options)
        ood_val = {}
        if cfg.tune:
            for display, key in suite.ood_val.items():
                ds = load_split(registry.dataset(key), "val", data_config, options)
                ood_val[display] = (one_pass(key, "val", ds, f"forward {display} (val)"), ds)
        validation = ValidationData(one_pass(suite.id, "val", id_val, f"forward {suite.id} (val)"), id_val,
                                    ood_val)
    timing["forward_passes"] = time.perf_counter() - started

    ctx = DetectorContext(model=model, device=device, data_config=data_config,
                          batch_size=cfg.batch_size, num_workers=workers, amp_dtype=dtype,
                          memory_format=memory_format, pipeline=cfg.data_pipeline, train=train_outputs)
    scores: dict[str, dict[str, np.ndarray]] = {name: {} for name in splits}
    for det in detectors:
        started = time.perf_counter()
        if det.needs_train:
            det.fit(ctx)
        for name, (_, dataset) in splits.items():
            scores[name][det.label] = det.score(ctx, outputs[name], dataset)
        timing[f"detector_{det.label}"] = time.perf_counter() - started
    if cfg.tune:
        assert validation is not None
        for det in list(detectors):
            started = time.perf_counter()
            tuned = tune_detector(det, ctx, validation)
            if tuned is None:
                continue
            if tuned.needs_train:
                tuned.fit(ctx)
            for name, (_, dataset) in splits.items():
                scores[name][tuned.label] = tuned.score(ctx, outputs[name], dataset)
            detectors.append(tuned)
            timing[f"detector_{tuned.label}"] = time.perf_counter() - started

    k = model.num_classes
    id_out = outputs[suite.id]
    probs = id_out.logits.double().softmax(dim=1).numpy()
    id_metrics = metrics.id_metrics(probs, id_out.labels.numpy(), k)
    if validation is not None:  # the one-scalar calibration baseline, fitted on ID val
        id_metrics.update(temperature_scaled_metrics(validation.id_outputs.logits, validation.id_outputs.labels,
                                                     id_out.logits, id_out.labels, k))
    ood_results: dict[str, Any] = {}
    for det in detectors:
        per_set = {}
        for display, (group, _) in ood_sets.items():
            values = metrics.ood_metrics(scores[suite.id][det.label], scores[display][det.label])
            per_set[display] = {"group": group, **values}
        ood_results[det.label] = {"sets": per_set, **_group_means(per_set)}

    out_dir = Path(cfg.out) if cfg.out else Path("runs") / meta["run"] if cfg.model else ckpt_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    scores_bytes = _scores_bytes(splits, outputs, scores, k)
    results = {
        "schema": RESULTS_SCHEMA,
        "schema_version": RESULTS_VERSION,
        "created": utc_now(),
        "run": meta["run"],
        "evaluation": {"id": uuid.uuid4().hex, "name": eval_name or "default"},
        "checkpoint": {"path": str(ckpt_path), "sha256": checkpoint_sha,
                       "epochs": meta.get("epochs_done"), "complete": meta.get("complete")},
        "partial": {"limit": cfg.limit} if cfg.limit else None,
        "model": {"name": meta["model"]["name"], "arch": meta["model"].get("arch"), "loss": meta["model"]["loss"],
                  "embed_dim": meta["model"]["embed_dim"], "head": meta["model"]["head"]},
        "loss": meta.get("loss", {"name": meta["model"]["loss"], "tag": meta["model"]["loss"]}),
        "seed": meta["train_config"]["seed"],
        "train_config": meta["train_config"],
        "weights": meta.get("weights"),
        "suite": suite.name,
        "id_dataset": suite.id,
        "data_config": data_config,
        "data_root": str(options.data_root),
        "registry": {"path": str(registry.path), "sha256": registry.sha256},
        "train_registry": meta["registry"],
        "eval_config": {**asdict(cfg), "amp_dtype": precision,
                        "num_workers": workers},
        "datasets": {
            name: {"group": group, "dataset": _dataset_key(name, suite.id, ood_sets), "n": len(outputs[name])}
            for name, (group, _) in splits.items()
        },
        "validation": None if validation is None else {
            "id": {"dataset": suite.id, "split": "val", "n": len(validation.id_outputs)},
            "ood": {display: {"dataset": suite.ood_val[display], "split": "val", "n": len(out)}
                    for display, (out, _) in validation.ood.items()},
            "used_for": ["temperature scaling"] + (["--tune"] if cfg.tune else []),
        },
        "detectors": {det.label: det.settings() for det in detectors},
        "metrics_conventions": {
            "score": "higher = more in-distribution",
            "fpr95": "ID positive: fraction of OOD with score >= the threshold keeping 95% of ID",
            "fpr95_openood": "OOD positive: roc_curve(is_ood, -score, drop_intermediate=False), first tpr >= 0.95",
            "ood_units": "percent",
            "ece_bins": 15,
        },
        "id_metrics": id_metrics,
        "ood": ood_results,
        "feature_cache": {"folder": str(cache.folder) if cache.folder else None, "read": cache.hits,
                          "computed": cache.misses},
        "device": str(device),
        "timing_seconds": {key: round(value, 3) for key, value in timing.items()},
        "versions": environment(device),
        # scores.csv.gz belongs to this results.json only: the report checks its hash before use.
        "scores_file": {"name": scores_file(eval_name), "sha256": sha256_bytes(scores_bytes)},
    }
    results_path = out_dir / results_file(eval_name)
    with folder_lock(out_dir, "eval", lock_name=".halo-bench-eval.lock", wait=True):
        _note_replaced(results_path, checkpoint_sha)
        # Scores first, then the results naming their hash: a kill in between leaves a pair that
        # the report recognises as mismatched, never a silent one.
        atomic_write_bytes(out_dir / scores_file(eval_name), scores_bytes)
        atomic_write_json(results_path, results)
    return results, results_path


def _note_replaced(path: Path, checkpoint_sha: str) -> None:
    """Say what an evaluation of the same name, about to be replaced, was."""
    import json

    try:
        old = json.loads(path.read_text())
        old_sha, created = old["checkpoint"]["sha256"], old["created"]
    except (OSError, ValueError, KeyError, TypeError):
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


def _dataset_key(name: str, id_name: str, ood_sets: dict[str, tuple[str, str]]) -> str:
    return id_name if name == id_name else ood_sets[name][1]


def _group_means(per_set: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Unweighted means of each metric over the near and far sets (docs/protocol.md section 2)."""
    out = {}
    for group in GROUPS:
        rows = [v for v in per_set.values() if v["group"] == group]
        if rows:
            out[group] = {m: float(np.mean([r[m] for r in rows])) for m in metrics.OOD_METRICS}
    return out


def _scores_bytes(splits: dict[str, tuple[str, Any]], outputs: dict[str, SplitOutputs],
                  scores: dict[str, dict[str, np.ndarray]], num_classes: int) -> bytes:
    """scores.csv.gz's bytes: one row per sample, one column per detector."""
    frames = []
    for name, (group, _) in splits.items():
        out = outputs[name]
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


def summarize(results: dict[str, Any]) -> str:
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
    return "\n".join(lines)
