"""Checks of an evaluation request that need no torch: detector names and settings, OOD set
names, and whether every dataset it reads is on disk. The CLI runs them first, so a
mistake costs a fraction of a second, not the seconds torch, timm and a checkpoint take."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.errors import HaloBenchError


def run_config(checkpoint: Path) -> dict[str, Any] | None:
    """The run's config.json beside a halo-bench checkpoint (None where there is none)."""
    try:
        doc = json.loads((checkpoint.parent / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check_detectors(specs: list[str] | None, abstain: bool | None) -> list[Any]:
    """Build the requested detectors (names, settings, and, when `abstain` is known, whether
    they apply to the model's head); returns them."""
    from ..detectors import detectors_for

    return detectors_for(specs, True if abstain is None else abstain)


def check_fit_sizes(registry: Any, suite_name: str, specs: list[str] | None, data_root: str | None) -> None:
    """Settings of the requested detectors that the suite's ID-train split cannot serve (knn's
    explicit k at or past its size), checked on the split itself before anything trains. Loads
    the split: call it where the data are about to be read anyway."""
    if not specs:
        return
    from ..detectors import Detector, detectors_for

    dets = [d for d in detectors_for(specs, True) if type(d).check_fit_size is not Detector.check_fit_size]
    if not dets:
        return
    from ..data import LoadOptions, load_split, resolve_data_root

    suite = registry.suite(suite_name)
    options = LoadOptions(resolve_data_root(data_root))
    n = len(load_split(registry.dataset(suite.id), "train", suite.data_config, options))
    for det in dets:
        det.check_fit_size(n)


def loss_abstains(loss: str) -> bool:
    from ..losses import get_loss

    return get_loss(loss).abstain


def check_eval_request(checkpoint: Path, registry: Any, ood: list[str] | None, detectors: list[str] | None,
                       data_root: str | None, tune: bool, suite: str | None = None,
                       shift: list[str] | None = None, severities: list[int] | None = None) -> None:
    """Everything `eval` can check before torch loads. `suite` is given for a foreign
    classifier; a halo-bench checkpoint's suite, loss and data root come from its config.json
    (without one, evaluation checks them once the checkpoint is read)."""
    config = None if suite else run_config(checkpoint)
    if suite is None:
        if config is None:
            check_detectors(detectors, None)
            if shift:
                check_shift_tokens(shift)
            return
        try:
            suite, loss = config["suite"]["name"], config["loss"]["name"]
        except (KeyError, TypeError):
            return
        if suite not in registry.suites:
            return  # evaluate() names the registry the run was trained with
        abstain = loss_abstains(loss) if isinstance(loss, str) else None
    else:
        abstain = False  # a foreign classifier has its own linear head
    spec = registry.suite(suite)
    ood_sets = registry.resolve_ood(spec, ood)
    check_detectors(detectors, abstain)
    trained_from = (config or {}).get("data_root")
    from ..data import resolve_data_root

    root = resolve_data_root(data_root, fallback=trained_from if trained_from and Path(trained_from).is_dir()
                             else None)
    needed = [spec.id, *(key for _, key in ood_sets.values())]
    if tune:
        needed += list(spec.ood_val.values())
    check_present(registry, needed, root)
    if shift:
        check_shift_request(registry, spec, shift, severities, (config or {}).get("data_config") or spec.data_config,
                            root)


def check_shift_tokens(tokens: list[str]) -> None:
    """`--shift` names only groups and corruptions halo-bench knows (the suite is not known yet)."""
    from ..core.errors import unknown_name
    from ..data.shift import PUBLISHED, SELECTIONS

    for token in tokens:
        if token not in (*SELECTIONS, *PUBLISHED):
            raise unknown_name("corruption or group (--shift)", token, (*SELECTIONS, *PUBLISHED))


def check_shift_request(registry: Any, suite: Any, shift: list[str], severities: list[int] | None,
                        data_config: dict[str, Any], root: Path) -> None:
    """The suite has a shift set under `root` (its files, or generated) with every corruption
    `--shift` names, and the severities are 1-5."""
    from ..data.shift import (
        available_corruptions,
        choose_shift_set,
        parse_severities,
        select_corruptions,
    )

    check_shift_tokens(shift)
    parse_severities(",".join(map(str, severities)) if severities else None)
    family = choose_shift_set(registry, suite, root)
    available = available_corruptions(family, registry.dataset(suite.id), data_config, root)
    select_corruptions(shift, available, repr(family.name), family.source == "corrupted")


def check_present(registry: Any, names: list[str], root: Path) -> None:
    """Every dataset of `names` on disk under `root` (or in the package), else one error
    naming all the missing ones and how to get each."""
    from ..data import DatasetMissing, how_to_get, presence

    missing = []
    for name in dict.fromkeys(names):
        spec = registry.dataset(name)
        if presence(spec, root).status == "missing":
            missing.append(f"{spec.name!r}: {how_to_get(spec, root)}")
    if missing:
        raise DatasetMissing(f"{len(missing)} dataset(s) missing under {root}:\n"
                             + "\n".join(f"- {line}" for line in missing))


def check_bench_request(registry: Any, suite: str, losses: list[str], detectors: list[str] | None,
                        data_root: str | None, shift: list[str] | None = None,
                        severities: list[int] | None = None) -> None:
    """`bench`'s detectors against every benched loss's head, and its suite's datasets on disk
    (with --shift, its shift set too)."""
    from ..data import resolve_data_root

    for loss in losses:
        abstain = loss_abstains(loss)
        try:
            check_detectors(detectors, abstain)
        except HaloBenchError as exc:
            raise HaloBenchError(f"--detectors for the {loss} runs: {exc}") from None
    spec = registry.suite(suite)
    root = resolve_data_root(data_root)
    check_present(registry, [spec.id, *(key for _, key in spec.ood_sets().values())], root)
    if shift:
        check_shift_request(registry, spec, shift, severities, spec.data_config, root)
