"""Covariate-shifted ID sets: the shift sources of the registry (docs/protocol.md, "Covariate shift").

A suite's `shift:` entry lists datasets of these sources, in order of preference; the first
one present under the data root is the one an `eval --shift` reads (`choose_shift_set`):

- `cifar-c`: the published CIFAR-10-C / CIFAR-100-C files, `<corruption>.npy` (N x 32 x 32 x 3
  uint8, severities 1-5 stacked in blocks of N / 5 rows) and `labels.npy`;
- `imagenet-c`: the published ImageNet-C tree, `<corruption>/<severity>/<wnid>/*.JPEG`;
- `corrupted`: generated in memory from the suite's own ID test split by `corruptions.py`
  (no download, so every suite, the embedded one included, runs offline).

Each (corruption, severity) is a dataset of its own (`shifted_spec`): the family's entry
plus `corruption` and `severity` in its parameters (and, when generated, the ID dataset's
entry), so the feature cache keys every shifted pass by what produced its images. The
loaders live in `shifted.py` (numpy and torch); this module stays import-light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import HaloBenchError, unknown_name
from .base import DatasetMissing, LoadOptions, how_to_get, presence, register_source

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from .registry import DatasetSpec, Registry, SuiteSpec

# The 15 corruptions of CIFAR-10-C's and ImageNet-C's benchmark, and the 4 extra ("validation") ones.
STANDARD = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
            "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
PUBLISHED = STANDARD + EXTRA
NEED_ASSETS = ("glass_blur", "snow", "frost", "fog", "spatter")  # not generated: image assets, Wand or OpenCV
FAMILIES = {  # Hendrycks and Dietterich's groups, the extra corruptions placed by kind
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
SEVERITIES = (1, 2, 3, 4, 5)
SELECTIONS = ("all", "standard", *FAMILIES)  # what `--shift` takes besides corruption names


@dataclass(frozen=True)
class Release:
    """A published archive: where it is, its checksum, the folder it unpacks to."""

    url: str
    filename: str
    md5: str
    folder: str


# Zenodo records 2535967 and 3555552 (research notes, section 2); MD5s as torchvision-style loaders check them.
CIFAR_C_RELEASES = {
    "CIFAR-10-C": Release("https://zenodo.org/record/2535967/files/CIFAR-10-C.tar", "CIFAR-10-C.tar",
                          "56bf5dcef84df0e2308c6dcbcbbd8499", "CIFAR-10-C"),
    "CIFAR-100-C": Release("https://zenodo.org/record/3555552/files/CIFAR-100-C.tar", "CIFAR-100-C.tar",
                           "11f0ed0f1191edbf9fa23466ae6021d3", "CIFAR-100-C"),
}
# ImageNet-C, Zenodo record 2235448: five archives, each unpacking to <corruption>/<severity>/<wnid>/.
IMAGENET_C_ARCHIVES = {
    "noise.tar": "e80562d7f6c3f8834afb1ecf27252745", "blur.tar": "2d8e81fdd8e07fef67b9334fa635e45c",
    "weather.tar": "33ffea4db4d93fe4a428c40a6ce0c25d", "digital.tar": "89157860d7b10d5797849337ca2e5c03",
    "extra.tar": "d492dfba5fc162d8ec2c3cd8ee672984",
}
IMAGENET_C_URL = "https://zenodo.org/record/2235448/files/"


# --------------------------------------------------------------------------- one dataset per (corruption, severity)


def shifted_spec(family: DatasetSpec, id_spec: DatasetSpec, corruption: str, severity: int) -> DatasetSpec:
    """The dataset of one corruption at one severity: `family/corruption/severity`, whose
    parameters (the feature cache's key) say what its images are made from."""
    params: dict[str, Any] = {**family.params, "corruption": corruption, "severity": severity}
    if family.source == "corrupted":  # made from the ID test split: its entry is part of the images' recipe
        from .corruptions import VERSION

        params["of"] = json.loads(json.dumps(id_spec.to_dict(), default=str))
        params["corruptions_version"] = VERSION
    return replace(family, name=f"{family.name}/{corruption}/{severity}", params=params, splits={"test": {}},
                   classes=id_spec.classes, aliases=())


def native_channels(id_spec: DatasetSpec, data_config: dict[str, Any]) -> int:
    """Channels of the ID images the generator corrupts: one for the embedded (grey) sets and
    torchvision's MNIST family, else the model's input channels."""
    if id_spec.source == "embedded" or id_spec.params.get("class") in ("MNIST", "FashionMNIST", "KMNIST"):
        return 1
    return int(data_config["input_size"][0])


def available_corruptions(family: DatasetSpec, id_spec: DatasetSpec, data_config: dict[str, Any],
                          root: Path) -> tuple[str, ...]:
    """The corruptions `family` offers here: its files under `root` (published), else the
    generated ones (saturate only where the images have colour: on grey it is the identity)."""
    if family.source == "corrupted":
        from .corruptions import CORRUPTIONS  # numpy: only once a shift is asked for

        grey = native_channels(id_spec, data_config) == 1
        return tuple(c for c in CORRUPTIONS if not (grey and c == "saturate"))
    folder = shift_folder(family, root)
    if family.source == "cifar-c":
        return tuple(c for c in PUBLISHED if (folder / f"{c}.npy").is_file())
    return tuple(c for c in PUBLISHED if (folder / c).is_dir())


def select_corruptions(tokens: list[str], available: tuple[str, ...], where: str, generated: bool = False) -> list[str]:
    """`--shift`'s tokens (all, standard, a family, corruption names) -> corruptions, in the
    order of `available`; a name the set lacks is an error that says which it has (and, for a
    `generated` set, why)."""
    known = set(PUBLISHED) | set(SELECTIONS)
    chosen: set[str] = set()
    for token in tokens:
        if token not in known:
            raise unknown_name("corruption or group (--shift)", token, known)
        if token == "all":
            chosen |= set(available)
        elif token == "standard":
            chosen |= set(STANDARD) & set(available)
        elif token in FAMILIES:
            chosen |= set(FAMILIES[token]) & set(available)
        elif token not in available:
            why = "" if not generated else (
                " (it needs image assets, so it is not generated; read it from the published files)"
                if token in NEED_ASSETS else " (the images are grey, which saturation leaves unchanged)")
            raise HaloBenchError(f"--shift {token}: {where} has no {token!r}{why}; it has: {', '.join(available)}.")
        else:
            chosen.add(token)
    if not chosen:
        raise HaloBenchError(f"--shift {','.join(tokens)} selects none of {where}'s corruptions "
                             f"({', '.join(available)}).")
    return [c for c in available if c in chosen]


def parse_severities(text: str | None) -> list[int]:
    """`--severities 1,3,5` -> [1, 3, 5] (default: all five)."""
    if text is None:
        return list(SEVERITIES)
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or not set(values) <= set(SEVERITIES):
        raise HaloBenchError(f"--severities takes comma-separated severities from 1 to 5, got {text!r}.")
    return values


def choose_shift_set(registry: Registry, suite: SuiteSpec, root: Path) -> DatasetSpec:
    """The first of the suite's `shift:` sets present under `root` (generated ones always are)."""
    if not suite.shift:
        raise HaloBenchError(f"suite {suite.name!r} has no shift sets: give it a `shift:` entry in the registry "
                             "(e.g. `shift: [cifar-c-style]`, the generated corruptions of its ID test split).")
    specs = [registry.dataset(name) for name in suite.shift]
    for spec in specs:
        if presence(spec, root).status != "missing":
            return spec
    raise DatasetMissing(f"none of suite {suite.name!r}'s shift sets is under {root}:\n"
                         + "\n".join(f"- {s.name!r}: {how_to_get(s, root)}" for s in specs))


def shift_folder(spec: DatasetSpec, root: Path) -> Path:
    """Where a published shift set's files are: `dir`, else the release's own folder name."""
    default = CIFAR_C_RELEASES[spec.params["release"]].folder if spec.source == "cifar-c" else spec.name
    return root / spec.params.get("dir", default)


# --------------------------------------------------------------------------- the sources


def _check_common(spec: DatasetSpec, where: str) -> None:
    for key in ("corruption", "severity"):  # set per shifted dataset, never in the registry
        if key in spec.params and "/" not in spec.name:
            raise HaloBenchError(f"{where}.params.{key}: set by `eval --shift`, not in the registry.")
    if set(spec.splits) != {"test"}:
        raise HaloBenchError(f"{where}.splits: a shift set has one split, test.")


def _validate_corrupted(spec: DatasetSpec, where: str) -> None:
    _check_common(spec, where)
    unknown = sorted(set(spec.params) - {"seed", "corruption", "severity", "of", "corruptions_version"})
    if unknown:
        raise HaloBenchError(f"{where}.params: unknown key(s) {', '.join(unknown)}; a corrupted set takes seed.")
    seed = spec.params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise HaloBenchError(f"{where}.params.seed: expected an integer in [0, 2**32), got {seed!r}.")


def _validate_cifar_c(spec: DatasetSpec, where: str) -> None:
    from .sources import _check_path

    _check_common(spec, where)
    release = spec.params.get("release")
    if release not in CIFAR_C_RELEASES:
        raise HaloBenchError(f"{where}.params.release: {unknown_name('release', str(release), CIFAR_C_RELEASES)}")
    if "dir" in spec.params:
        _check_path(spec.params["dir"], f"{where}.params.dir")


def _validate_imagenet_c(spec: DatasetSpec, where: str) -> None:
    from .sources import _check_path

    _check_common(spec, where)
    _check_path(spec.params.get("dir", spec.name), f"{where}.params.dir")


def _parts(spec: DatasetSpec, split: str) -> tuple[str, int]:
    params = spec.split_params(split)
    if "corruption" not in params:
        raise HaloBenchError(f"dataset {spec.name!r} is a family of shifted sets: evaluate it with "
                             "`halo-bench eval --shift`, which reads one corruption and severity at a time.")
    return str(params["corruption"]), int(params["severity"])


@register_source("corrupted", "generated from the suite's ID test split: CIFAR-10-C-style corruptions "
                 "(corruptions.py), 5 severities, deterministic under the seed", _validate_corrupted,
                 locate=lambda spec, root: [])
def load_corrupted(spec: DatasetSpec, split: str, data_config: dict[str, Any], options: LoadOptions) -> Dataset:
    from .shifted import corrupted_split

    corruption, severity = _parts(spec, split)
    return corrupted_split(spec, corruption, severity, data_config, options)


def _download_cifar_c(spec: DatasetSpec, root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    release = CIFAR_C_RELEASES[spec.params["release"]]
    folder = shift_folder(spec, root)
    if all((folder / f"{name}.npy").is_file() for name in (*PUBLISHED, "labels")):
        return  # unpacked already: never fetch 2.9 GB again
    # The tar unpacks to <release folder>/; extracted beside it, so `dir` may rename only the default.
    download_and_extract_archive(release.url, str(folder.parent), filename=release.filename, md5=release.md5)


def cifar_c_files(spec: DatasetSpec, root: Path) -> list[tuple[str, str, str, Path]]:
    """(URL, file name, MD5, folder) of the archive to fetch by hand."""
    release = CIFAR_C_RELEASES[spec.params["release"]]
    return [(release.url, release.filename, release.md5, shift_folder(spec, root).parent)]


@register_source("cifar-c", "CIFAR-10-C / CIFAR-100-C's published .npy files (Zenodo; MD5-verified download)",
                 _validate_cifar_c, locate=lambda spec, root: [shift_folder(spec, root)], download=_download_cifar_c,
                 files=cifar_c_files)
def load_cifar_c(spec: DatasetSpec, split: str, data_config: dict[str, Any], options: LoadOptions) -> Dataset:
    from .shifted import npy_split

    corruption, severity = _parts(spec, split)
    return npy_split(spec, shift_folder(spec, options.data_root), corruption, severity, data_config, options)


@register_source("imagenet-c", "ImageNet-C's published JPEG tree <corruption>/<severity>/<wnid>/ (user-provided)",
                 _validate_imagenet_c, locate=lambda spec, root: [shift_folder(spec, root)])
def load_imagenet_c(spec: DatasetSpec, split: str, data_config: dict[str, Any], options: LoadOptions) -> Dataset:
    from .shifted import imagenet_c_split

    corruption, severity = _parts(spec, split)
    return imagenet_c_split(spec, shift_folder(spec, options.data_root), corruption, severity, data_config,
                            options)
