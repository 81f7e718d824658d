"""CIFAR-10-C-style corruptions (Hendrycks and Dietterich 2019), generated without image assets.

The fourteen corruptions of `make_cifar_c.py` that need no asset files, no ImageMagick and
no OpenCV, with CIFAR-10-C's published parameters for five severities, reimplemented with
numpy, scipy, scikit-image and Pillow (docs/protocol.md, "Covariate shift"):

- noise: gaussian, shot, impulse, speckle;
- blur: defocus, gaussian, zoom, motion (ImageMagick's one-sided motion kernel, as the
  `imagecorruptions` package ports it);
- weather: brightness;
- digital: contrast, saturate, JPEG, pixelate, elastic.

Images are float arrays in [0, 1], N x H x W x C (C = 1 or 3); the result is uint8, the
published rule `np.uint8(clip(x, 0, 1) * 255)` (truncation). The parameters are for 32 x 32
images; for other sizes every spatial parameter (blur sigmas and radii, motion radius,
elastic amplitudes) is scaled by min(H, W) / 32, and relative ones (zoom factors, the
pixelation fraction, JPEG quality, noise levels) are kept. On one channel, brightness acts
on the intensity and saturate is the identity (a grey image has no saturation).

Every random draw comes from one `numpy.random.Generator` per (seed, corruption, severity),
drawn over the whole split in image order, so a generated set is deterministic under its
seed. It is "CIFAR-10-C-style": the published files were made without a seed and cannot be
regenerated bit for bit; read those files instead where they are present.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np

Array = np.ndarray
# Bump whenever a corruption's output changes: cached images and cached passes are keyed by it.
VERSION = 1
SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 32  # the image size CIFAR-10-C's parameters are for

# CIFAR-10-C's parameters (make_cifar_c.py), severity 1..5.
PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # (radius, alias blur)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),  # arange
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # (radius, sigma); angle ~ U(-45, 45)
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)),  # (alpha, sigma, affine) x image size
}
# The order seeds the draws (`corrupt`): append, never reorder.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "gaussian_blur",
               "zoom_blur", "motion_blur", "contrast", "brightness", "saturate", "jpeg_compression", "pixelate",
               "elastic_transform")
# CIFAR-10-C's groups (Hendrycks and Dietterich 2019), with its four extra corruptions placed by kind;
# the ones that need assets (glass_blur, snow, frost, fog, spatter) are not generated here.
FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "gaussian_blur", "zoom_blur", "motion_blur"),
    "weather": ("brightness",),
    "digital": ("contrast", "saturate", "jpeg_compression", "pixelate", "elastic_transform"),
}

Corruption = Callable[[Array, object, np.random.Generator, float], Array]
_FUNCTIONS: dict[str, Corruption] = {}


def _register(name: str) -> Callable[[Corruption], Corruption]:
    def wrap(fn: Corruption) -> Corruption:
        _FUNCTIONS[name] = fn
        return fn

    return wrap


def corrupt(images: Array, name: str, severity: int, seed: int = 0) -> Array:
    """`images` (uint8 or float in [0, 1], N x H x W x C) corrupted by `name` at `severity`, as uint8."""
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1-5, got {severity!r}")
    x = images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected N x H x W x C images with C 1 or 3, got shape {images.shape}")
    scale = min(x.shape[1], x.shape[2]) / REFERENCE_SIZE
    rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
    out = _FUNCTIONS[name](x, PARAMS[name][severity - 1], rng, scale)
    return to_uint8(out)


def to_uint8(x: Array) -> Array:
    """CIFAR-10-C's conversion: clip to [0, 1], scale to [0, 255], truncate."""
    return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


# --- noise -------------------------------------------------------------------------------------

@_register("gaussian_noise")
def gaussian_noise(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    return x + rng.normal(size=x.shape, scale=c)


@_register("shot_noise")
def shot_noise(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    return rng.poisson(x * c) / c


@_register("impulse_noise")
def impulse_noise(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    """Salt and pepper on a fraction `c` of the values (per pixel and channel), half each,
    as scikit-image's random_noise(mode='s&p', amount=c)."""
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


@_register("speckle_noise")
def speckle_noise(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    return x + x * rng.normal(size=x.shape, scale=c)


# --- blur --------------------------------------------------------------------------------------

@_register("gaussian_blur")
def gaussian_blur(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    from scipy.ndimage import gaussian_filter

    sigma = c * scale  # per channel, no blur across images or channels (skimage's gaussian, mode nearest)
    return gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)


def disk_kernel(radius: float, alias_blur: float) -> Array:
    """make_cifar_c's `disk`: an aliased disk on a 17 x 17 grid (radius <= 8), normalised, then
    blurred by a 3 x 3 Gaussian of sigma `alias_blur` (OpenCV's GaussianBlur, reflect-101 border)."""
    size = 8 if radius <= 8 else int(math.ceil(radius))
    grid = np.arange(-size, size + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    ksize = 3 if radius <= 8 else 5
    return _separable_gaussian(disk, ksize, alias_blur)


def _separable_gaussian(image: Array, ksize: int, sigma: float) -> Array:
    """OpenCV's GaussianBlur with a ksize x ksize kernel and a reflect-101 border."""
    from scipy.ndimage import correlate1d

    half = ksize // 2
    taps = np.exp(-((np.arange(ksize) - half) ** 2) / (2.0 * sigma * sigma))
    taps /= taps.sum()
    out = correlate1d(image, taps, axis=0, mode="mirror")
    return correlate1d(out, taps, axis=1, mode="mirror")


@_register("defocus_blur")
def defocus_blur(x: Array, c: tuple, rng: np.random.Generator, scale: float) -> Array:
    from scipy.ndimage import correlate

    kernel = disk_kernel(c[0] * scale, max(c[1] * scale, 1e-3))
    rows, cols = np.nonzero(kernel)  # the disk's support: the zero rim adds nothing
    kernel = kernel[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return correlate(x, kernel[None, :, :, None], mode="mirror")  # per image and channel


def zoom_factors(c: tuple) -> Array:
    """The zoom factors, built with the same float `np.arange` as make_cifar_c (7, 12, 16, 21, 26 of them)."""
    return np.arange(*c)


def clipped_zoom(images: Array, factor: float) -> Array:
    """Zoom the centre of N x H x W x C images by `factor` (bilinear) and crop back to H x W."""
    h, w = images.shape[1:3]
    ch, cw = int(math.ceil(h / factor)), int(math.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = _zoom_axis(_zoom_axis(images[:, top:top + ch, left:left + cw], factor, 1), factor, 2)
    trim_top, trim_left = (zoomed.shape[1] - h) // 2, (zoomed.shape[2] - w) // 2
    return zoomed[:, trim_top:trim_top + h, trim_left:trim_left + w]


def _zoom_axis(images: Array, factor: float, axis: int) -> Array:
    """scipy.ndimage.zoom(order=1) along one axis, for a whole batch at once: round(n x factor)
    samples at i (n - 1) / (m - 1), linearly interpolated."""
    n = images.shape[axis]
    m = int(round(n * factor))
    coords = np.arange(m) * ((n - 1) / (m - 1)) if m > 1 else np.zeros(1)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1] * images.ndim
    shape[axis] = m
    weight = (coords - lo).reshape(shape).astype(images.dtype)
    return np.take(images, lo, axis=axis) * (1 - weight) + np.take(images, hi, axis=axis) * weight


@_register("zoom_blur")
def zoom_blur(x: Array, c: tuple, rng: np.random.Generator, scale: float) -> Array:
    factors = zoom_factors(c)
    images = x.astype(np.float32)
    total = np.zeros_like(images)
    for factor in factors:  # each factor zooms every image at once
        total += clipped_zoom(images, float(factor))
    return (images + total) / (len(factors) + 1)


def motion_kernel(radius: int, sigma: float, angle: float) -> tuple[Array, list[tuple[int, int]]]:
    """ImageMagick's motion blur: a one-sided Gaussian of width 2 radius + 1 along `angle`
    (degrees); returns the weights and each tap's (dy, dx) offset."""
    width = 2 * radius + 1
    weights = np.exp(-np.arange(width) ** 2 / (2.0 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
    weights /= weights.sum()
    point = (width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle)))
    hypot = math.hypot(*point)
    offsets = [(-math.ceil(i * point[0] / hypot - 0.5), -math.ceil(i * point[1] / hypot - 0.5)) for i in range(width)]
    return weights, offsets


@_register("motion_blur")
def motion_blur(x: Array, c: tuple, rng: np.random.Generator, scale: float) -> Array:
    radius = max(1, int(round(c[0] * scale)))
    sigma = max(c[1] * scale, 0.25)
    angles = rng.uniform(-45, 45, size=len(x))
    n, h, w = x.shape[:3]
    weights = motion_kernel(radius, sigma, 0.0)[0]  # the angle moves the taps, not their weights
    offsets = np.array([motion_kernel(radius, sigma, float(angle))[1] for angle in angles]).reshape(n, -1, 2)
    # As ImageMagick's port: a tap as far as the image is wide stops the sum (not renormalised).
    inside = (np.abs(offsets[..., 0]) < h) & (np.abs(offsets[..., 1]) < w)
    live = np.cumprod(inside, axis=1).astype(bool)
    out = np.zeros_like(x)
    images = np.arange(n)[:, None, None]
    for tap, weight in enumerate(weights):  # every image at once; a dead tap adds exactly 0
        rows = np.clip(np.arange(h)[None, :] - offsets[:, tap, 0, None], 0, h - 1)
        cols = np.clip(np.arange(w)[None, :] - offsets[:, tap, 1, None], 0, w - 1)
        out += (weight * live[:, tap])[:, None, None, None] * x[images, rows[:, :, None], cols[:, None, :]]
    return out


# --- digital -----------------------------------------------------------------------------------

@_register("contrast")
def contrast(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    means = x.mean(axis=(1, 2), keepdims=True)  # per image and channel
    return (x - means) * c + means


def _hsv_op(x: Array, op: Callable[[Array], Array]) -> Array:
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(x)  # N x H x W x 3, channel last
    return hsv2rgb(op(hsv))


@_register("brightness")
def brightness(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    if x.shape[-1] == 1:  # grey: the value channel is the intensity
        return np.clip(x + c, 0.0, 1.0)

    def brighter(hsv: Array) -> Array:
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0.0, 1.0)
        return hsv

    return _hsv_op(x, brighter)


@_register("saturate")
def saturate(x: Array, c: tuple, rng: np.random.Generator, scale: float) -> Array:
    if x.shape[-1] == 1:  # a grey image has no saturation to change
        return x

    def saturated(hsv: Array) -> Array:
        hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0.0, 1.0)
        return hsv

    return _hsv_op(x, saturated)


def _pil(image: Array) -> object:
    from PIL import Image

    pixels = to_uint8(image)
    return Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")


def _from_pil(image: object, channels: int) -> Array:
    out = np.asarray(image, dtype=np.float64) / 255.0
    return out[..., None] if channels == 1 else out


@_register("jpeg_compression")
def jpeg_compression(x: Array, c: int, rng: np.random.Generator, scale: float) -> Array:
    from PIL import Image

    out = np.empty_like(x)
    for i, image in enumerate(x):
        buffer = io.BytesIO()
        _pil(image).save(buffer, "JPEG", quality=int(c))
        out[i] = _from_pil(Image.open(buffer), x.shape[-1])
    return out


@_register("pixelate")
def pixelate(x: Array, c: float, rng: np.random.Generator, scale: float) -> Array:
    from PIL import Image

    h, w = x.shape[1:3]
    small = (max(1, int(w * c)), max(1, int(h * c)))
    out = np.empty_like(x)
    for i, image in enumerate(x):
        out[i] = _from_pil(_pil(image).resize(small, Image.BOX).resize((w, h), Image.BOX), x.shape[-1])
    return out


@_register("elastic_transform")
def elastic_transform(x: Array, c: tuple, rng: np.random.Generator, scale: float) -> Array:
    """make_cifar_c's elastic transform: a random affine warp of three anchor points by up to
    c[2] x size pixels, then a displacement field of uniform noise smoothed by a Gaussian of
    sigma c[1] x size and scaled by c[0] x size; bilinear, reflecting borders."""
    from scipy.ndimage import gaussian_filter

    n, h, w = x.shape[:3]
    size = min(h, w)
    alpha, sigma, affine = c[0] * size, c[1] * size, c[2] * size
    centre = np.float32([h, w]) // 2
    square = size // 3
    src = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    # The draws in make_cifar_c's order, image by image: the anchor shifts, then dx's and dy's noise.
    shifts, noise = np.empty((n, 3, 2), np.float32), np.empty((n, 2, h, w))
    for i in range(n):
        shifts[i] = rng.uniform(-affine, affine, size=src.shape).astype(np.float32)
        noise[i, 0], noise[i, 1] = rng.uniform(-1, 1, size=(h, w)), rng.uniform(-1, 1, size=(h, w))
    # sigma 0 on the image and field axes: each field smoothed alone, exactly as one 2-D filter
    fields = (gaussian_filter(noise, (0, 0, sigma, sigma), mode="reflect", truncate=3.0) if sigma > 0 else noise)
    fields = fields * alpha
    out = np.empty_like(x)
    for start in range(0, n, _CHUNK):  # bounded memory: a few coordinate arrays of one chunk
        part = slice(start, min(start + _CHUNK, n))
        warped = _warp(x[part], [_inverse_affine(src, src + d) for d in shifts[part]])
        dx, dy = fields[part, 0], fields[part, 1]
        out[part] = _resample(warped, np.arange(h)[None, :, None] + dy, np.arange(w)[None, None, :] + dx, "reflect")
    return out


_CHUNK = 512


def _warp(images: Array, maps: list[tuple[Array, Array]]) -> Array:
    """Each image under its own affine map (output (row, col) -> input), bilinear, reflect-101."""
    h, w = images.shape[1:3]
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    # scipy's affine_transform computes offset + m0 * row + m1 * col in this order
    in_rows = np.stack([o[0] + m[0, 0] * rows + m[0, 1] * cols for m, o in maps])
    in_cols = np.stack([o[1] + m[1, 0] * rows + m[1, 1] * cols for m, o in maps])
    return _resample(images, in_rows, in_cols, "mirror")


def _resample(images: Array, rows: Array, cols: Array, mode: str) -> Array:
    """Bilinear samples of N x H x W x C images at per-image float (row, col) grids (N x H x W):
    one scipy call per channel over every image (an integer image coordinate, so each sample
    blends its own image's pixels only)."""
    from scipy.ndimage import map_coordinates

    n, h, w, ch = images.shape
    index = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], (n, h, w)).ravel()
    coords = [index, np.broadcast_to(rows, (n, h, w)).ravel(), np.broadcast_to(cols, (n, h, w)).ravel()]
    return np.stack([map_coordinates(np.ascontiguousarray(images[..., k]), coords, order=1, mode=mode)
                     .reshape(n, h, w) for k in range(ch)], axis=-1)


def _inverse_affine(src: Array, dst: Array) -> tuple[Array, Array]:
    """The map from output (row, col) to input (row, col) of the affine transform taking the
    points `src` to `dst` (each 3 x 2, as (x, y) = (col, row) pairs, OpenCV's convention)."""
    a = np.hstack([dst, np.ones((3, 1))])  # solve for the inverse: dst -> src
    inverse = np.linalg.solve(a, src).T  # 2 x 3 in (x, y)
    # scipy works in (row, col) = (y, x): swap the axes of the matrix and the offset
    matrix = inverse[:, :2][::-1, ::-1]
    offset = inverse[:, 2][::-1]
    return matrix, offset
