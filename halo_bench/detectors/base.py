"""The scoring contract: a detector maps inputs to one number, higher = more in-distribution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..errors import HaloBenchError, unknown_name

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ..features import SplitOutputs
    from ..models import Classifier


@dataclass
class DetectorContext:
    """What a detector may read besides one split's cached outputs."""

    model: Classifier
    device: torch.device
    data_config: dict[str, Any]
    batch_size: int = 256
    num_workers: int = 0
    amp_dtype: torch.dtype | None = None
    train: SplitOutputs | None = None  # ID train outputs (eval transform), for detectors that fit

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def abstain(self) -> bool:
        return self.model.abstain


class Detector:
    """Base class. Post-hoc detectors override `score_outputs`; the rest `score`.

    Class attributes say what a detector needs, so evaluation runs the ID-train pass
    only when some detector fits on it, and the model again only for `needs_inputs`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    defaults: ClassVar[dict[str, float]] = {}
    halo_only: ClassVar[bool] = False
    needs_train: ClassVar[bool] = False
    needs_inputs: ClassVar[bool] = False

    def __init__(self, **params: float) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise HaloBenchError(
                f"detector {self.name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
                f"it takes: {', '.join(self.defaults) or 'none'}."
            )
        self.params: dict[str, float] = {**self.defaults, **params}

    def fit(self, ctx: DetectorContext) -> None:
        """Fit on `ctx.train` (only called when `needs_train`)."""

    def score(self, ctx: DetectorContext, outputs: SplitOutputs, dataset: Dataset) -> np.ndarray:
        return self.score_outputs(ctx, outputs).astype(np.float64)

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"params": dict(self.params), "halo_only": self.halo_only,
                "needs_train": self.needs_train, "needs_inputs": self.needs_inputs}


DETECTORS: dict[str, type[Detector]] = {}


def register_detector(cls: type[Detector]) -> type[Detector]:
    if cls.name in DETECTORS:
        raise ValueError(f"detector {cls.name!r} registered twice")
    DETECTORS[cls.name] = cls
    return cls


def detectors_for(names: list[str] | None, abstain: bool) -> list[Detector]:
    """Instantiate detectors by name; by default every one that applies to the model."""
    if not names:
        return [cls() for cls in DETECTORS.values() if abstain or not cls.halo_only]
    out = []
    for name in dict.fromkeys(names):
        if name not in DETECTORS:
            raise unknown_name("detector", name, DETECTORS)
        if DETECTORS[name].halo_only and not abstain:
            raise HaloBenchError(f"detector {name!r} reads a HALO head; this checkpoint was trained with CCE.")
        out.append(DETECTORS[name]())
    return out


def class_logits(logits: Tensor, num_classes: int) -> Tensor:
    """The K real-class logits (for HALO: relative to the abstain class), float64."""
    return logits[:, :num_classes].double()


def softmax_probs(logits: Tensor) -> Tensor:
    """The model's softmax in float64: K-way for CCE, (K+1)-way for HALO (the one its loss trained)."""
    return logits.double().softmax(dim=1)
