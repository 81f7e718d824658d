"""The loss registry: one `LossSpec` per training loss, torch-free so the CLI can
validate a loss name and its knobs before it imports torch.

A loss declares its head (a module with `forward(z)`, `loss(z, y)`, `config()`,
`diagnostics()`), its knobs (a small frozen dataclass whose fields are the loss's
hyperparameters) and its label. A new loss is one module plus one `register_loss`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import HaloBenchError, unknown_name


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    `head` is the head class or a lazy "module:Class" reference (so declaring the
    builtin losses imports no torch); the class is called as
    `head(in_features=D, num_classes=K, **knobs)`. `knobs` is a dataclass type whose
    fields (with defaults and `metadata["help"]`) are the loss's hyperparameters; its
    `__post_init__` may raise ValueError for values it cannot use. Each knob becomes a flag of
    `halo-bench train` (`--name`, `--name/--no-name` for a bool; `metadata["flag"]` and
    `metadata["aliases"]` override), shared by the losses that have a knob of that name.
    """

    name: str
    label: str
    summary: str
    knobs: type
    head: type | str
    # What "knob=value" labels abbreviate in run names (label_smoothing -> ls).
    short: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The head ends in an abstain class (HALO's): what detectors that read one check before torch loads.
    abstain: bool = False

    def head_class(self) -> type:
        if isinstance(self.head, str):
            module, _, attr = self.head.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.head

    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.knobs())

    def make_knobs(self, values: Mapping[str, Any]) -> Any:
        """Validated knobs from user values (missing ones take the defaults)."""
        known = {f.name: f for f in dataclasses.fields(self.knobs)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            takes = ", ".join(f"{n} (default {_fmt(f.default)})" for n, f in known.items()) or "no knobs"
            raise HaloBenchError(f"loss {self.name!r} has no knob(s) {', '.join(unknown)}; it takes: {takes}.")
        typed = {}
        for name, value in values.items():
            typed[name] = _coerce(f"{self.name}:{name}", value, type(known[name].default))
        try:
            return self.knobs(**typed)
        except ValueError as exc:
            raise HaloBenchError(f"loss {self.name!r}: {exc}") from None

    def changed(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """The knobs that differ from this loss's defaults."""
        defaults = self.defaults()
        return {k: v for k, v in knobs.items() if defaults.get(k) != v}

    def tag(self, knobs: Mapping[str, Any]) -> str:
        """The loss as a name for run folders and report columns: `cce`, `cce+ls0.1`."""
        changed = self.changed(knobs)
        return self.name + "".join(f"+{self.short.get(k, k)}{_fmt(v)}" for k, v in changed.items())

    def display(self, knobs: Mapping[str, Any]) -> str:
        """The loss as a report label: `CCE`, `CCE label_smoothing=0.1`."""
        changed = self.changed(knobs)
        return " ".join([self.label, *(f"{k}={_fmt(v)}" for k, v in changed.items())])


def knob_fields() -> dict[str, list[tuple[LossSpec, dataclasses.Field]]]:
    """Every knob name of the registered losses -> the (loss, field) pairs that have it: what
    `train`'s knob flags and the report's recipe grouping are generated from."""
    out: dict[str, list[tuple[LossSpec, dataclasses.Field]]] = {}
    for spec in LOSSES.values():
        for f in dataclasses.fields(spec.knobs):
            out.setdefault(f.name, []).append((spec, f))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _coerce(where: str, value: Any, kind: type) -> Any:
    """Command-line strings (and YAML/JSON values) to the knob's type; non-finite floats refused."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise HaloBenchError(f"{where} takes true or false, got {value!r}.")
    if kind in (int, float):
        try:
            number = kind(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is int and isinstance(value, float) and not float(value).is_integer()):
            raise HaloBenchError(f"{where} takes {'an integer' if kind is int else 'a number'}, got {value!r}.")
        if kind is float and not math.isfinite(number):
            raise HaloBenchError(f"{where} must be finite, got {value!r}.")
        return number
    return value


LOSSES: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec) -> LossSpec:
    """Add a loss to the registry (its name must be new)."""
    if spec.name in LOSSES:
        raise ValueError(f"loss {spec.name!r} registered twice")
    if not dataclasses.is_dataclass(spec.knobs):
        raise TypeError(f"loss {spec.name!r}: knobs must be a dataclass type")
    LOSSES[spec.name] = spec
    return spec


def get_loss(name: str) -> LossSpec:
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name]


def parse_loss(text: str) -> tuple[LossSpec, dict[str, Any]]:
    """`name` or `name:knob=value:knob=value` -> (spec, validated knob values as given)."""
    name, *assignments = [part.strip() for part in text.strip().split(":")]
    spec = get_loss(name)
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HaloBenchError(f"{text!r}: write loss knobs as name:knob=value (e.g. cce:label_smoothing=0.1).")
        values[key.strip()] = value.strip()
    knobs = spec.make_knobs(values)
    return spec, {k: getattr(knobs, k) for k in values}
