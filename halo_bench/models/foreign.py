"""A timm classifier trained elsewhere, evaluated as it is (`halo-bench eval FILE --model NAME
--suite S`): its pre-logits features are the embedding and its own classifier the CCE head.

Kept apart from `weights.py` (reading weights files) so that the dependencies point one
way: models -> weights, and foreign -> models, weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..core.errors import HaloBenchError
from .weights import (
    WeightsReport,
    _pre_logits_module,
    create_from_state,
    file_classes_and_chans,
    load_init_file,
    select_state_dict,
)


def foreign_classifier(path: str | os.PathLike[str], arch: str, num_classes: int, in_chans: int,
                       use_ema: bool = False) -> tuple[Any, WeightsReport]:
    """A timm classifier trained elsewhere, as a halo-bench Classifier: its pre-logits features are the
    embedding (identity embed layer) and its own linear classifier is the CCE head."""
    from torch import nn

    from ..losses import LinearHead
    from .checkpoint import refuse_non_finite
    from .classifier import Classifier

    path = Path(path).expanduser()
    obj, kind, digest = load_init_file(path, use_ema)
    if kind == "halo-bench":
        raise HaloBenchError(f"{path} is a halo-bench checkpoint: evaluate it without --model/--suite.")
    state, kind = select_state_dict(obj, path, use_ema)
    refuse_non_finite(state, path, "Use weights of a run that trained without diverging.")
    file_classes, file_chans = file_classes_and_chans(arch, state)
    if file_classes is None:
        raise HaloBenchError(f"{path} holds no classifier for timm model {arch!r} (no "
                             "classifier weight); only a trained classifier can be evaluated as it is.")
    if file_classes != num_classes:
        raise HaloBenchError(f"{path} classifies {file_classes} classes but the suite's ID set has {num_classes}; "
                             f"evaluate it with a suite of {file_classes} classes.")
    timm_model, keys = create_from_state(arch, state, file_chans or in_chans, num_classes=num_classes)
    if keys["missing"]:
        raise HaloBenchError(f"{path} does not fill timm model {arch!r}: missing {', '.join(keys['missing'][:5])}. "
                             "Name the architecture it was trained with.")
    fc = timm_model.get_classifier()
    if not isinstance(fc, nn.Linear):
        raise HaloBenchError(f"timm model {arch!r} has a {type(fc).__name__} classifier; evaluating a foreign "
                             "classifier needs a linear one.")
    backbone = _pre_logits_module(timm_model)
    head = LinearHead(fc.in_features, num_classes)
    head.fc = fc
    model = Classifier(backbone, nn.Identity(), head)
    report = WeightsReport("file", str(path), str(path), digest,
                           "safetensors" if path.suffix == ".safetensors" else kind, **keys)
    model.weights_report = report  # type: ignore[assignment]
    model.eval()
    return model, report


def foreign_run(path: str | os.PathLike[str], arch: str, suite_name: str, registry: Any,
                use_ema: bool = False) -> tuple[Any, dict[str, Any]]:
    """(model, run metadata) for `eval FILE --model NAME --suite S`: what a halo-bench run's
    checkpoint would say, for a classifier trained elsewhere (loss 'cce': its own linear head)."""
    from ..core.io import utc_now
    from .timm_names import check_model_name

    check_model_name(arch, pretrained=True)
    suite = registry.suite(suite_name)
    id_spec = registry.dataset(suite.id)
    classes = list(id_spec.classes or ())
    channels = int(suite.data_config["input_size"][0])
    model, report = foreign_classifier(path, arch, len(classes), channels, use_ema)
    first = next((m for m in model.modules() if hasattr(m, "in_channels")), None)
    data_config = {**suite.data_config, "input_size": [getattr(first, "in_channels", channels),
                                                       *suite.data_config["input_size"][1:]]}
    stem = re.sub(r"[^A-Za-z0-9_.]+", "_", Path(path).name.split(".")[0]) or "file"
    run = f"{suite.name}-{arch}+foreign-{stem}{'+ema' if use_ema else ''}-cce-s0"
    meta = {
        "run": run,
        "train_config": {"model": arch, "loss": "cce", "suite": suite.name, "seed": 0, "init_from": str(path),
                         "use_ema": use_ema, "foreign": True},
        "loss": {"name": "cce", "label": "CCE (foreign classifier)", "tag": "cce", "knobs": {}, "changed": {}},
        "model": {"name": arch, "arch": arch, "loss": "cce", "in_chans": data_config["input_size"][0],
                  "embed_dim": model.head.in_features, "head": model.head.config()},
        "suite": suite.to_dict(),
        "classes": classes,
        "data_config": data_config,
        "data_root": None,
        "registry": {"path": str(registry.path), "sha256": registry.sha256},
        "weights": report.to_dict(),
        "created": utc_now(),
        "complete": True,
        "epochs_done": None,
    }
    return model, meta
