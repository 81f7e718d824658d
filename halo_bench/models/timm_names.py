"""timm's model names without importing timm: a list cached per timm and halo-bench version.

Importing timm takes seconds (it imports torch and every model module); a mistyped
model name should not. The first check writes the list (`timm.list_models()` plus
the architectures halo-bench registers), later ones read it.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from ..core.errors import HaloBenchError, unknown_name

CACHE_ENV = "HALO_BENCH_CACHE"


def cache_dir() -> Path:
    """$HALO_BENCH_CACHE, else $XDG_CACHE_HOME/halo-bench, else ~/.cache/halo-bench."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "halo-bench"


def _names_file() -> Path:
    from ..core.provenance import __version__

    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = "unknown"
    return cache_dir() / f"timm-models-{timm_version}-halo-bench-{__version__}.txt"


def model_names() -> frozenset[str]:
    """Every model name timm can build, with halo-bench's own variants."""
    path = _names_file()
    try:
        return frozenset(path.read_text().split())
    except OSError:
        pass
    import timm

    from . import archs  # noqa: F401  (registers the CIFAR variants)

    names = frozenset(timm.list_models())
    try:
        from ..core.io import atomic_write_text

        atomic_write_text(path, "\n".join(sorted(names)) + "\n")
    except (OSError, HaloBenchError):  # a read-only home only costs the next check its speed
        pass
    return names


def split_tag(name: str) -> tuple[str, str | None]:
    """`resnet18.a1_in1k` -> ("resnet18", "a1_in1k"); timm's `name.tag` convention."""
    base, _, tag = name.partition(".")
    return base, tag or None


def check_model_name(name: str, pretrained: bool = False) -> None:
    """An unknown name gets close matches; a pretrained tag without a way to load it is refused."""
    base, tag = split_tag(name)
    names = model_names()
    if base not in names:
        raise unknown_name("timm model", base, names)
    if tag is not None and not pretrained:
        raise HaloBenchError(
            f"{name!r} names timm's pretrained weights {tag!r}, but this command builds a randomly "
            f"initialised model and would silently ignore them. Train {base!r} from scratch by naming it "
            "without the tag."
        )
