"""Offline generators of the `digits` suite (docs/protocol.md section 5).

Everything comes from files that installed packages ship: scikit-learn's digits
and the images inside `skimage/data/`. Nothing here touches the network. Every
out-of-distribution image is rendered into the ID format (8x8, uint8, levels
0..16) so that no set can be told apart by its format alone.

Each generator returns plain numpy arrays `(images (N, 8, 8) uint8, labels (N,) int64)`
and is registered by name in `GENERATORS`; `generate(name, **params)` dispatches.
All randomness goes through `np.random.default_rng(seed)`, so equal arguments give
byte-identical output. A `count` is at most `MAX_COUNT` (100,000) and a `seed` lies in
[0, 2**32 - 1]; `check_params` applies these rules when the registry is read.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import os
from collections.abc import Callable, Sequence

import numpy as np

from ..core.errors import HaloBenchError, unknown_name

Array = np.ndarray
Generator = Callable[..., tuple[Array, Array]]

SIDE = 8
LEVELS = 16  # intensities are 0..LEVELS, as in sklearn's digits
N_FACES = 100  # lfw_subset(): the first 100 images are faces, the rest are not
MIN_FACE_CROP = 0.7  # extra face crops keep at least this fraction of the side
# Every image is generated in memory and then converted to float model inputs (12 KB each at
# CIFAR's 3x32x32), so a count far beyond any benchmark's (sklearn ships 1,797 digits) is
# refused at validation instead of failing later in an allocation of many GiB.
MAX_COUNT = 100_000

# skimage.data function -> the files it reads. Only names whose files all lie in
# the installed package directory are offered: any other name would make skimage
# try to download its file. The two halves of `stereo_motorcycle` get own names.
_SKIMAGE_FILES: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut.png",),
    "brick": ("brick.png",),
    "camera": ("camera.png",),
    "cat": ("chelsea.png",),
    "cell": ("cell.png",),
    "checkerboard": ("chessboard_GRAY.png",),
    "chelsea": ("chelsea.png",),
    "clock": ("clock_motion.png",),
    "coffee": ("coffee.png",),
    "coins": ("coins.png",),
    "colorwheel": ("color.png",),
    "grass": ("grass.png",),
    "gravel": ("gravel.png",),
    "horse": ("horse.png",),
    "hubble_deep_field": ("hubble_deep_field.jpg",),
    "immunohistochemistry": ("ihc.png",),
    "logo": ("logo.png",),
    "microaneurysms": ("microaneurysms.png",),
    "moon": ("moon.png",),
    "motorcycle_left": ("motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz"),
    "motorcycle_right": ("motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz"),
    "page": ("page.png",),
    "retina": ("retina.jpg",),
    "rocket": ("rocket.jpg",),
    "shepp_logan_phantom": ("phantom.png",),
    "text": ("text.png",),
}
_STEREO = {"motorcycle_left": 0, "motorcycle_right": 1}
_LFW_FILE = "lfw_subset.npy"


class EmbeddedDataError(HaloBenchError, ValueError):
    """A bad argument to an embedded generator: the project's error, and a ValueError."""


GENERATORS: dict[str, Generator] = {}


def generator(name: str) -> Callable[[Generator], Generator]:
    """Register the decorated function in `GENERATORS` under `name`."""

    def register(fn: Generator) -> Generator:
        if name in GENERATORS:
            raise ValueError(f"embedded generator {name!r} is registered twice")
        GENERATORS[name] = fn
        return fn

    return register


def check_params(name: str, params: dict[str, object]) -> None:
    """Check, without generating anything, that `params` fit the generator `name`: its
    parameter names, and `count` and `seed` where given."""
    if name not in GENERATORS:
        raise EmbeddedDataError(str(unknown_name("embedded generator", name, GENERATORS)))
    signature = inspect.signature(GENERATORS[name])
    try:
        signature.bind(**params)
    except TypeError as err:
        raise EmbeddedDataError(
            f"embedded generator {name!r}: {err}; "
            f"its parameters are: {', '.join(signature.parameters)}"
        ) from None
    if "count" in params:
        _check_count(params["count"])
    if "seed" in params:
        _check_seed(params["seed"])


def generate(name: str, **params: object) -> tuple[Array, Array]:
    """Run the generator registered as `name` with `params`."""
    check_params(name, params)
    return GENERATORS[name](**params)


# ---------------------------------------------------------------- rendering


def _to_gray(image: Array) -> Array:
    """Any 2-D, (H, W, 1), RGB or RGBA image -> 2-D float64 luminance."""
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.integer):
        # Scale by the dtype's range so an integer alpha channel means opacity.
        a = a.astype(np.float64) / np.iinfo(a.dtype).max
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    else:
        raise EmbeddedDataError(f"cannot render an image of dtype {a.dtype}; give numbers")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[-1] in (3, 4):
        rgb = a[..., :3]
        if a.shape[-1] == 4:  # composite on white, as skimage's rgba2rgb does
            alpha = a[..., 3:]
            rgb = rgb * alpha + (1.0 - alpha)
        a = rgb @ np.array([0.2125, 0.7154, 0.0721])  # skimage's rgb2gray weights
    elif a.ndim != 2:
        raise EmbeddedDataError(
            f"cannot render an image of shape {a.shape}; give (H, W), (H, W, 3) or (H, W, 4)"
        )
    if a.size == 0:
        raise EmbeddedDataError(f"cannot render an empty image of shape {a.shape}")
    if not np.isfinite(a).all():
        raise EmbeddedDataError("cannot render an image with NaN or infinite values")
    return a


@functools.lru_cache(maxsize=4096)
def _area_weights(n: int) -> Array:
    """(SIDE, n) matrix whose rows average n pixels into SIDE bins by overlap area."""
    width = n / SIDE
    edges = np.arange(SIDE + 1) * width
    pixel = np.arange(n)
    overlap = np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel)
    weights = np.clip(overlap, 0.0, None) / width
    weights.flags.writeable = False
    return weights


def _render_gray(gray: Array) -> Array:
    """2-D float64 image -> (8, 8) uint8 in 0..16: area mean, stretch, round."""
    small = _area_weights(gray.shape[0]) @ gray @ _area_weights(gray.shape[1]).T
    lo, hi = small.min(), small.max()
    span = hi - lo
    # Relative tolerance: averaging a flat image leaves float noise worth ~1e-16.
    if span <= 1e-9 * max(abs(lo), abs(hi)):
        return np.zeros((SIDE, SIDE), np.uint8)
    levels = np.rint((small - lo) * (LEVELS / span))
    return np.clip(levels, 0, LEVELS).astype(np.uint8)


def render_digit_format(image: Array) -> Array:
    """Render any image into the digits format: (8, 8) uint8, min -> 0, max -> 16.

    RGB(A) is converted to luminance (RGBA composited on white), the image is
    area-averaged to 8x8, stretched to 0..16 and rounded; a flat image gives zeros.
    """
    return _render_gray(_to_gray(image))


# ---------------------------------------------------------------- validation


def _check_count(count: object) -> int:
    if isinstance(count, bool):
        raise EmbeddedDataError(f"count must be a positive integer, got {count!r}")
    try:
        value = operator.index(count)
    except TypeError:
        raise EmbeddedDataError(f"count must be a positive integer, got {count!r}") from None
    if value < 1:
        raise EmbeddedDataError(f"count must be at least 1, got {value}")
    if value > MAX_COUNT:
        raise EmbeddedDataError(f"count must be at most {MAX_COUNT} (every image is generated in memory), "
                                f"got {value}")
    return value


def _check_seed(seed: object) -> int:
    try:
        value = operator.index(seed)
    except TypeError:
        raise EmbeddedDataError(f"seed must be a non-negative integer, got {seed!r}") from None
    if isinstance(seed, bool) or not 0 <= value < 2**32:
        raise EmbeddedDataError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return value


# ---------------------------------------------------------------- sources


@functools.lru_cache(maxsize=1)
def _skimage_data_dir() -> str:
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


@functools.lru_cache(maxsize=1)
def available_images() -> tuple[str, ...]:
    """Names `skimage_crops` accepts: skimage.data images shipped in the package."""
    shipped = set(os.listdir(_skimage_data_dir()))
    return tuple(n for n, files in sorted(_SKIMAGE_FILES.items()) if shipped.issuperset(files))


def _check_shipped(filename: str) -> None:
    # Guard so that skimage never falls back to downloading.
    if not os.path.isfile(os.path.join(_skimage_data_dir(), filename)):
        raise EmbeddedDataError(
            f"scikit-image's package lacks data/{filename}; reinstall scikit-image "
            "(the embedded suite never downloads)"
        )


@functools.cache
def _skimage_gray(name: str) -> Array:
    """The shipped skimage.data image `name` as read-only 2-D float64."""
    import skimage.data

    if name in _STEREO:
        image = skimage.data.stereo_motorcycle()[_STEREO[name]]
    else:
        image = getattr(skimage.data, name)()
    gray = _to_gray(image)
    gray.flags.writeable = False
    return gray


@functools.lru_cache(maxsize=1)
def _lfw_faces() -> Array:
    """The 100 faces of skimage's LFW subset, read-only (100, 25, 25) float64."""
    import skimage.data

    _check_shipped(_LFW_FILE)
    faces = skimage.data.lfw_subset()[:N_FACES].astype(np.float64)
    faces.flags.writeable = False
    return faces


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Array, Array]:
    """sklearn's digits as read-only (1797, 8, 8) uint8 images and int64 labels."""
    from sklearn.datasets import load_digits  # reads the CSV sklearn ships

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _crop_boxes(
    rng: np.random.Generator, heights: Array, widths: Array, min_side: Array, max_side: Array
) -> tuple[Array, Array, Array]:
    """Random square boxes (top, left, side), one per row of the given bounds."""
    side = rng.integers(min_side, max_side, endpoint=True)
    top = rng.integers(0, heights - side, endpoint=True)
    left = rng.integers(0, widths - side, endpoint=True)
    return top, left, side


# ---------------------------------------------------------------- generators


@generator("sklearn_digits")
def sklearn_digits(
    classes: Sequence[int], split: str, seed: int = 0, test_fraction: float = 0.3, val_fraction: float = 0.0
) -> tuple[Array, Array]:
    """sklearn's digits of `classes`, stratified train/test split; labels are the digits.

    `split` is "train", "test", "val" or "all" (the whole filtered set, seed unused).
    With `val_fraction` > 0, a stratified `val` part of that fraction of the whole set is
    carved out of the train part (the test part stays as without it), deterministically
    from `seed`; `train` is then what remains, so no image is in two splits.
    Images keep sklearn's own values 0..16 and its order.
    """
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise EmbeddedDataError(
            f"classes must be a non-empty sequence of digits 0..9, got {classes!r}"
        )
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in classes) or any(
        not 0 <= c <= 9 for c in classes
    ):
        raise EmbeddedDataError(f"classes must be digits 0..9, got {list(classes)!r}")
    if split not in ("train", "test", "val", "all"):
        raise EmbeddedDataError(f"split must be 'train', 'test', 'val' or 'all', got {split!r}")
    seed = _check_seed(seed)
    if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise EmbeddedDataError(
            f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}"
        )
    valid_val = isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0 - test_fraction
    if not valid_val:
        raise EmbeddedDataError(
            f"val_fraction must lie in [0, 1 - test_fraction), got {val_fraction!r}"
        )
    if split == "val" and val_fraction == 0:
        raise EmbeddedDataError("split 'val' needs val_fraction > 0")

    images, labels = _digits()
    index = np.flatnonzero(np.isin(labels, np.asarray(classes, dtype=np.int64)))
    if split != "all":
        from sklearn.model_selection import train_test_split

        try:
            train, test = train_test_split(
                index, stratify=labels[index], random_state=seed, test_size=test_fraction
            )
            parts = {"train": train, "test": test}
            if val_fraction > 0:
                n_val = max(len(classes), int(round(val_fraction * len(index))))
                parts["train"], parts["val"] = train_test_split(
                    train, stratify=labels[train], random_state=seed, test_size=n_val
                )
        except ValueError as err:
            raise EmbeddedDataError(f"cannot split classes {list(classes)}: {err}") from None
        index = np.sort(parts[split])
    return images[index], labels[index]


@generator("skimage_crops")
def skimage_crops(
    images: Sequence[str], count: int, seed: int = 0, min_frac: float = 0.1, max_frac: float = 0.5
) -> tuple[Array, Array]:
    """`count` random square crops of shipped skimage.data images, rendered to 8x8.

    Crops go round-robin over `images`; a crop's side is drawn between `min_frac` and
    `max_frac` of its image's shorter side. Labels are indices into `images`.
    """
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence) or not images:
        raise EmbeddedDataError(
            f"images must be a non-empty list of skimage.data names, got {images!r}; "
            f"available: {', '.join(available_images())}"
        )
    unknown = [name for name in images if name not in available_images()]
    if unknown:
        error = unknown_name("skimage.data image", str(unknown[0]), available_images())
        raise EmbeddedDataError(f"{error} Only images shipped inside scikit-image are usable offline.")
    count = _check_count(count)
    seed = _check_seed(seed)
    fracs_are_numbers = all(isinstance(f, (int, float)) for f in (min_frac, max_frac))
    if not fracs_are_numbers or not 0.0 < min_frac <= max_frac <= 1.0:
        raise EmbeddedDataError(
            f"need 0 < min_frac <= max_frac <= 1, got min_frac={min_frac!r}, max_frac={max_frac!r}"
        )

    grays = [_skimage_gray(name) for name in images]
    source = np.arange(count) % len(grays)
    heights = np.array([g.shape[0] for g in grays])[source]
    widths = np.array([g.shape[1] for g in grays])[source]
    shorter = np.minimum(heights, widths)
    # Never below 8 px unless the image itself is smaller: the 8x8 result would be upsampled.
    min_side = np.maximum(np.ceil(min_frac * shorter).astype(np.int64), np.minimum(SIDE, shorter))
    max_side = np.clip(np.floor(max_frac * shorter).astype(np.int64), min_side, shorter)

    rng = np.random.default_rng(seed)
    top, left, side = _crop_boxes(rng, heights, widths, min_side, max_side)
    out = np.empty((count, SIDE, SIDE), np.uint8)
    for i in range(count):
        g = grays[source[i]]
        out[i] = _render_gray(g[top[i] : top[i] + side[i], left[i] : left[i] + side[i]])
    return out, source.astype(np.int64)


@generator("lfw_faces")
def lfw_faces(count: int, seed: int = 0) -> tuple[Array, Array]:
    """Faces of skimage's LFW subset rendered to 8x8; labels are face indices 0..99.

    Up to 100: a random subset of whole faces. Beyond: every face whole once, then
    round-robin random square crops keeping at least 70% of the face's side.
    """
    count = _check_count(count)
    seed = _check_seed(seed)
    faces = _lfw_faces()
    n, height, width = faces.shape

    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    which = order[np.arange(count) % n]
    out = np.empty((count, SIDE, SIDE), np.uint8)
    for i in range(min(count, n)):
        out[i] = _render_gray(faces[which[i]])
    extra = count - n
    if extra > 0:
        shorter = min(height, width)
        top, left, side = _crop_boxes(
            rng,
            heights=np.full(extra, height),
            widths=np.full(extra, width),
            min_side=np.full(extra, math.ceil(MIN_FACE_CROP * shorter)),
            max_side=np.full(extra, shorter),
        )
        for k in range(extra):
            face = faces[which[n + k]]
            out[n + k] = _render_gray(face[top[k] : top[k] + side[k], left[k] : left[k] + side[k]])
    return out, which.astype(np.int64)


@generator("uniform_noise")
def uniform_noise(count: int, seed: int = 0) -> tuple[Array, Array]:
    """i.i.d. uniform integer pixels in 0..16; labels are all -1."""
    count = _check_count(count)
    rng = np.random.default_rng(_check_seed(seed))
    images = rng.integers(0, LEVELS, size=(count, SIDE, SIDE), dtype=np.uint8, endpoint=True)
    return images, np.full(count, -1, np.int64)
