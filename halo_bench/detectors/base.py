"""The scoring contract: a detector maps inputs to one number, higher = more in-distribution."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from ..core.errors import HaloBenchError, unknown_name

if TYPE_CHECKING:  # torch loads with the work: `halo-bench detectors` lists the field without it
    import torch
    from torch import Tensor
    from torch.utils.data import Dataset

    from ..features.passes import SplitOutputs
    from ..models.classifier import Classifier


@dataclass
class DetectorContext:
    """What a detector may read besides one split's cached outputs."""

    model: Classifier
    device: torch.device
    data_config: dict[str, Any]
    batch_size: int = 256
    num_workers: int = 0
    amp_dtype: torch.dtype | None = None  # the evaluation's autocast dtype, for detectors that run the model
    memory_format: torch.memory_format | None = None  # and its memory format (channels-last on CUDA)
    pipeline: str = "loader"  # "auto": in-memory arrays are served from the device (data/device.py)
    train: SplitOutputs | None = None  # ID train outputs (eval transform), for detectors that fit
    split: str = ""  # the split being scored, e.g. "digits": names it in a detector's progress line
    memo: dict[str, Any] = field(default_factory=dict)  # per-model values detectors share (e.g. the linear map)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def abstain(self) -> bool:
        return self.model.abstain

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """The value under `key` in `memo`, computed once by the first detector that asks."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


# A parameter's value: a number, or for a parameter with `choices` one of its option names.
Value = float | str
# A parameter check: (predicate, what a valid value is).
Check = tuple[Callable[[float], bool], str]
POSITIVE: Check = (lambda v: v > 0, "a number > 0")
NON_NEGATIVE: Check = (lambda v: v >= 0, "a number >= 0")
POSITIVE_INT: Check = (lambda v: v >= 1 and float(v).is_integer(), "an integer >= 1")
PERCENTILE: Check = (lambda v: 0 < v < 100, "a percentile strictly between 0 and 100")

READS = ("logits", "embedding", "penultimate", "inputs")


class Detector:
    """Base class. Post-hoc detectors override `score_outputs`; the rest `score`.

    Class attributes say what a detector needs, so evaluation runs the ID-train pass
    only when some detector fits on it, and the model again only for `needs_inputs`.
    `reads` names what it scores: the logits, the head's embedding, the backbone's
    penultimate features or the inputs themselves. `checks` validates numeric parameters
    (any other must be a finite number); a parameter in `choices` takes one of the
    named options instead (e.g. ASH's variant); `tune_grid` is what `--tune` searches,
    on validation data only.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    defaults: ClassVar[dict[str, Value]] = {}
    checks: ClassVar[dict[str, Check]] = {}
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    tune_grid: ClassVar[dict[str, tuple[float, ...]]] = {}
    reads: ClassVar[str] = "logits"
    halo_only: ClassVar[bool] = False
    needs_train: ClassVar[bool] = False
    needs_inputs: ClassVar[bool] = False

    def __init__(self, **params: Value) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise HaloBenchError(
                f"detector {self.name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
                f"it takes: {', '.join(self.defaults) or 'none'}."
            )
        for key, value in params.items():
            if key in self.choices:
                if value not in self.choices[key]:
                    raise HaloBenchError(f"detector {self.name!r}: {key} must be one of "
                                         f"{', '.join(self.choices[key])}, got {format_value(value)!r}.")
                continue
            if isinstance(value, str):
                raise HaloBenchError(f"detector {self.name!r}: {key}={value!r} is not a number.")
            ok, meaning = self.checks.get(key, (lambda v: True, "a finite number"))
            valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not valid or not ok(value):
                raise HaloBenchError(f"detector {self.name!r}: {key} must be {meaning}, got {value!r}.")
        self.params: dict[str, Value] = {**self.defaults, **params}
        self.explicit = frozenset(params)  # parameters the user set
        self.label = self.name  # the key in results; `detectors_for` names non-default settings
        self.tuning: dict[str, Any] | None = None  # set by --tune: the search on validation data

    def int_param(self, key: str) -> int:
        return int(self.params[key])

    def float_param(self, key: str) -> float:
        return float(self.params[key])

    def check_fit_size(self, n: int) -> None:
        """Refuse settings that `n` ID-train samples cannot serve (called before any forward pass;
        e.g. knn's explicit k); nothing to check by default."""

    def fit(self, ctx: DetectorContext) -> None:
        """Fit on `ctx.train` (only called when `needs_train`)."""

    def score(self, ctx: DetectorContext, outputs: SplitOutputs, dataset: Dataset) -> np.ndarray:
        """One float64 score per sample of `dataset`, higher = more in-distribution.

        The default scores the split's cached outputs; only detectors that must run the model
        again (`needs_inputs`, e.g. ODIN) override this and read `dataset`."""
        return self.score_outputs(ctx, outputs).astype(np.float64)

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        """Scores from one split's cached forward pass (`outputs.logits`, `.features`: the
        embedding, `.penultimate`), higher = more in-distribution."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        out = {"detector": self.name, "params": dict(self.params), "reads": self.reads,
               "halo_only": self.halo_only, "needs_train": self.needs_train,
               "needs_inputs": self.needs_inputs}
        if self.tuning is not None:
            out["tuning"] = self.tuning
        return out


DETECTORS: dict[str, type[Detector]] = {}


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: add a `Detector` subclass to the registry under its `name` (which must be new).

    It then appears in `halo-bench detectors`, is run by `eval` (with `NAME:PARAM=VALUE`
    settings and `--tune`) and is reported; `detectors/__init__.py` imports its module.
    """
    if cls.name in DETECTORS:
        raise ValueError(f"detector {cls.name!r} registered twice")
    DETECTORS[cls.name] = cls
    return cls


def format_value(value: Value) -> str:
    """A parameter value as settings and labels show it: `100`, `0.0014`, `b`."""
    return value if isinstance(value, str) else f"{value:g}"


def settings_label(name: str, settings: dict[str, Value]) -> str:
    """`knn[k=100]`, `ash[percentile=80,variant=b]`: a detector with non-default settings."""
    if not settings:
        return name
    return f"{name}[{','.join(f'{k}={format_value(v)}' for k, v in settings.items())}]"


def parse_detector_spec(spec: str) -> tuple[str, dict[str, Value]]:
    """`knn:k=100` -> ("knn", {"k": 100.0}); `odin:temperature=1000:eps=0.0014` sets two;
    `ash:variant=b` names an option. Text that is not a number stays text: the detector
    says whether the parameter takes it."""
    name, *assignments = [part.strip() for part in spec.strip().split(":")]
    params: dict[str, Value] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise HaloBenchError(
                f"cannot read detector setting {item!r} in {spec!r}; write NAME:PARAM=VALUE[:PARAM=VALUE], "
                "e.g. knn:k=100 or odin:temperature=1000:eps=0.0014."
            )
        value: Value
        try:
            value = float(text)
        except ValueError:
            value = text.strip()
        if key in params:
            raise HaloBenchError(f"detector setting {key!r} is given twice in {spec!r}.")
        params[key] = value
    return name, params


def make_detector(name: str, params: dict[str, Value], abstain: bool) -> Detector:
    if name not in DETECTORS:
        raise unknown_name("detector", name, DETECTORS)
    if DETECTORS[name].halo_only and not abstain:
        raise HaloBenchError(f"detector {name!r} reads a HALO head; this checkpoint was trained with CCE.")
    det = DETECTORS[name](**params)
    # A row a reader must not mistake for the default detector names its settings.
    det.label = settings_label(name, {k: v for k, v in det.params.items()
                                      if k in det.explicit and v != det.defaults[k]})
    return det


def detectors_for(names: list[str] | None, abstain: bool) -> list[Detector]:
    """Instantiate detectors from names or `name:param=value` specs; by default every one
    that applies to the model. A detector with non-default settings is labelled with them."""
    if not names:
        return [cls() for cls in DETECTORS.values() if abstain or not cls.halo_only]
    out: dict[str, Detector] = {}
    for spec in names:
        det = make_detector(*parse_detector_spec(spec), abstain=abstain)
        out.setdefault(det.label, det)
    return list(out.values())


_F = TypeVar("_F", bound=Callable[..., Any])


def no_grad(func: _F) -> _F:
    """`torch.no_grad()` as a decorator that imports torch only when the function runs."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def class_logits(logits: Tensor, num_classes: int) -> Tensor:
    """The K real-class logits (for HALO: relative to the abstain class), float64."""
    return logits[:, :num_classes].double()


def penultimate(outputs: SplitOutputs, who: str) -> Tensor:
    """The split's penultimate features, float64; outputs built without them are a caller error."""
    if outputs.penultimate is None:
        raise ValueError(f"{who} reads penultimate features, but these outputs were built without them.")
    return outputs.penultimate.double()


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)) to full float64 precision at every x (torch's softplus returns x above 20)."""
    import torch

    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


def top_and_rest(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(l_top, its column, r) per row, float64: the largest of the first `k` logits and
    r = log sum_{j != top} exp(l_j - l_top) over every column. A confident sample's softmax
    rounds to exactly 1.0 in float64 once the other classes hold less than 1e-16 of it; in
    terms of r it keeps its order: log p_top = -softplus(r), log(1 - p_top) = r - softplus(r)."""
    import torch

    logits = logits.double()
    top, index = logits[:, :k].max(dim=1)
    others = (logits - top[:, None]).scatter(1, index[:, None], float("-inf"))
    return top, index, torch.logsumexp(others, dim=1)


def log_max_softmax(logits: Tensor, k: int) -> Tensor:
    """log of the largest of the first `k` softmax probabilities, the softmax over every
    column (K for CCE; HALO's K+1, the one its loss trained), float64 and exact where the
    probability itself rounds to 1: a monotone function of MSP, so its metrics are MSP's."""
    _, _, rest = top_and_rest(logits, k)
    return -softplus(rest)
