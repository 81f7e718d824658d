"""The CIFAR-10-C-style corruptions (halo_bench/data/corruptions.py), each at severity 1 and 5,
against an independent computation of its published formula on fixed images: the same
Generator draws where the corruption is random, scikit-image, scipy and Pillow where they
implement the step, and direct float64 code (colorsys, explicit loops) for the rest."""

from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest

from halo_bench.data import corruptions as C

SEVERITIES = (1, 5)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Three fixed 32 x 32 RGB images: random pixels, a smooth gradient and a hard-edged square."""
    rng = np.random.default_rng(1234)
    noise = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:32, 0:32]
    gradient = np.stack([xx * 8, yy * 8, (xx + yy) * 4], axis=-1).clip(0, 255).astype(np.uint8)
    square = np.full((32, 32, 3), 30, np.uint8)
    square[8:24, 10:26] = (220, 180, 40)
    return np.stack([noise, gradient, square])


def _floats(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def _rng(name: str, severity: int, seed: int = 0) -> np.random.Generator:
    """The documented draw: one Generator per (seed, corruption, severity)."""
    return np.random.default_rng([seed, C.CORRUPTIONS.index(name), severity])


def _param(name: str, severity: int):
    return C.PARAMS[name][severity - 1]


def _raw(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """The corruption's float output before the uint8 conversion."""
    return C._FUNCTIONS[name](_floats(images), _param(name, severity), _rng(name, severity, seed), 1.0)


def _truncate(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def test_the_fourteen_corruptions_and_their_published_parameters() -> None:
    # the order seeds every draw (default_rng([seed, index, severity])): pinned
    assert C.CORRUPTIONS == ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur",
                             "gaussian_blur", "zoom_blur", "motion_blur", "contrast", "brightness", "saturate",
                             "jpeg_compression", "pixelate", "elastic_transform")
    assert set(C.CORRUPTIONS) == set(C._FUNCTIONS) == set(C.PARAMS)
    assert sorted(c for names in C.FAMILIES.values() for c in names) == sorted(C.CORRUPTIONS)
    assert C.FAMILIES["weather"] == ("brightness",)  # CIFAR-10-C's group
    # spot checks against make_cifar_c.py (research notes, section 1.2)
    assert C.PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert C.PARAMS["shot_noise"][4] == 50 and C.PARAMS["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert C.PARAMS["motion_blur"][4] == (9, 2.5) and C.PARAMS["saturate"][3] == (2, 0.1)
    assert [len(C.zoom_factors(c)) for c in C.PARAMS["zoom_blur"]] == [7, 12, 16, 21, 26]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_additive_noises_are_the_same_draws(rgb, severity) -> None:
    x = _floats(rgb)
    for name, formula in (("gaussian_noise", lambda x, r, c: x + r.normal(size=x.shape, scale=c)),
                          ("speckle_noise", lambda x, r, c: x + x * r.normal(size=x.shape, scale=c)),
                          ("shot_noise", lambda x, r, c: r.poisson(x * c) / c)):
        expected = _truncate(formula(x, _rng(name, severity), _param(name, severity)))
        got = C.corrupt(rgb, name, severity, seed=0)
        assert got.dtype == np.uint8 and got.shape == rgb.shape
        np.testing.assert_array_equal(got, expected, err_msg=name)
        assert (got != rgb).mean() > 0.3, name  # the noise changed most values


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_is_scikit_images_salt_and_pepper(rgb, severity) -> None:
    from skimage.util import random_noise

    expected = random_noise(_floats(rgb), mode="s&p", amount=_param("impulse_noise", severity),
                            rng=_rng("impulse_noise", severity))
    got = C.corrupt(rgb, "impulse_noise", severity)
    np.testing.assert_array_equal(got, _truncate(expected))
    flipped = np.mean((got == 0) | (got == 255))
    assert flipped == pytest.approx(_param("impulse_noise", severity), abs=0.02)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_is_the_per_image_per_channel_formula(rgb, severity) -> None:
    c = _param("contrast", severity)
    x = _floats(rgb)
    for i in range(len(x)):
        for k in range(3):
            channel = x[i, :, :, k]
            mean = sum(float(v) for v in channel.ravel()) / channel.size
            reference = (channel - mean) * c + mean
            np.testing.assert_allclose(_raw(rgb, "contrast", severity)[i, :, :, k], reference, atol=1e-12)


def _hsv_reference(images: np.ndarray, op) -> np.ndarray:
    """rgb -> hsv -> op -> rgb pixel by pixel with the standard library's colorsys."""
    out = np.empty(images.shape, np.float64)
    for index in np.ndindex(images.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*images[index])
        out[index] = colorsys.hsv_to_rgb(*op(h, s, v))
    return out


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_and_saturate_in_hsv(rgb, severity) -> None:
    x = _floats(rgb)
    c = _param("brightness", severity)
    reference = _hsv_reference(x, lambda h, s, v: (h, s, min(max(v + c, 0.0), 1.0)))
    np.testing.assert_allclose(_raw(rgb, "brightness", severity), reference, atol=1e-9)
    s0, s1 = _param("saturate", severity)
    reference = _hsv_reference(x, lambda h, s, v: (h, min(max(s * s0 + s1, 0.0), 1.0), v))
    np.testing.assert_allclose(_raw(rgb, "saturate", severity), reference, atol=1e-9)


def test_brightness_on_one_channel_is_the_intensity_and_saturate_is_the_identity(rgb) -> None:
    grey = rgb[..., :1]
    np.testing.assert_allclose(_raw(grey, "brightness", 5), np.clip(_floats(grey) + 0.3, 0, 1), atol=0)
    np.testing.assert_array_equal(C.corrupt(grey, "saturate", 5), grey)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_is_scikit_images(rgb, severity) -> None:
    from skimage.filters import gaussian

    sigma = _param("gaussian_blur", severity)
    for i, image in enumerate(_floats(rgb)):
        reference = gaussian(image, sigma=sigma, channel_axis=-1, mode="nearest", truncate=4.0)
        np.testing.assert_allclose(_raw(rgb, "gaussian_blur", severity)[i], reference, atol=1e-12)


def _reflect101(index: int, n: int) -> int:
    """OpenCV's BORDER_REFLECT_101 (scipy's 'mirror'): ... 2 1 | 0 1 2 ... n-1 | n-2 ..."""
    period = 2 * (n - 1)
    index = abs(index) % period
    return period - index if index >= n else index


def _defocus_reference(image: np.ndarray, radius: float, alias: float) -> np.ndarray:
    """make_cifar_c's defocus in float64 loops: an aliased disk on a 17 x 17 grid, normalised,
    blurred by a 3 x 3 Gaussian (reflect-101), then correlated with each channel (reflect-101)."""
    grid = range(-8, 9)
    disk = np.array([[1.0 if x * x + y * y <= radius * radius else 0.0 for x in grid] for y in grid])
    disk /= disk.sum()
    taps = [math.exp(-(d * d) / (2 * alias * alias)) for d in (-1, 0, 1)]
    taps = [t / sum(taps) for t in taps]
    n = disk.shape[0]
    kernel = np.zeros_like(disk)
    for r in range(n):
        for c in range(n):
            kernel[r, c] = sum(taps[a + 1] * taps[b + 1] * disk[_reflect101(r + a, n), _reflect101(c + b, n)]
                               for a in (-1, 0, 1) for b in (-1, 0, 1))
    h, w, _ = image.shape
    out = np.zeros_like(image)
    for r in range(h):
        for c in range(w):
            for dr in range(-8, 9):
                for dc in range(-8, 9):
                    weight = kernel[dr + 8, dc + 8]
                    if weight:
                        out[r, c] += weight * image[_reflect101(r + dr, h), _reflect101(c + dc, w)]
    return out


@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_blur_is_the_aliased_disk(rgb, severity) -> None:
    radius, alias = _param("defocus_blur", severity)
    got = _raw(rgb[1:], "defocus_blur", severity)[0]
    np.testing.assert_allclose(got, _defocus_reference(_floats(rgb[1]), radius, alias), atol=1e-9)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_zoom_blur_is_scipys_zoom(rgb, severity) -> None:
    from scipy.ndimage import zoom

    factors = np.arange(*_param("zoom_blur", severity))
    for i, image in enumerate(rgb):
        x = (image / 255.0).astype(np.float32)
        total = np.zeros_like(x)
        for z in factors:  # make_cifar_c's clipped_zoom
            ch = int(np.ceil(32 / z))
            top = (32 - ch) // 2
            zoomed = zoom(x[top:top + ch, top:top + ch], (z, z, 1), order=1)
            trim = (zoomed.shape[0] - 32) // 2
            total += zoomed[trim:trim + 32, trim:trim + 32]
        reference = (x + total) / (len(factors) + 1)
        np.testing.assert_allclose(_raw(rgb, "zoom_blur", severity)[i], reference, atol=1e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_is_pils_box_resize(rgb, severity) -> None:
    from PIL import Image

    size = int(32 * _param("pixelate", severity))
    got = C.corrupt(rgb, "pixelate", severity)
    for i, image in enumerate(rgb):
        pil = Image.fromarray(image).resize((size, size), Image.BOX).resize((32, 32), Image.BOX)
        np.testing.assert_array_equal(got[i], np.asarray(pil))
    assert size == {1: 30, 5: 20}[severity]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_is_pils_encoder_at_the_published_quality(rgb, severity) -> None:
    from PIL import Image

    got = C.corrupt(rgb, "jpeg_compression", severity)
    for i, image in enumerate(rgb):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=_param("jpeg_compression", severity))
        np.testing.assert_array_equal(got[i], np.asarray(Image.open(buffer)))
    assert not np.array_equal(got, rgb)


def _imagemagick_motion(image: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage in float64 (research notes 1.4): a one-sided Gaussian of
    width 2 radius + 1; tap i reads in(x + ox_i, y + oy_i), edge pixels repeated; taps stop at
    the first offset as large as the image (the numpy port's rule, not renormalised)."""
    width = 2 * radius + 1
    kernel = [math.exp(-(i * i) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma) for i in range(width)]
    kernel = [k / sum(kernel) for k in kernel]
    point = (width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle)))
    hypot = math.hypot(*point)
    h, w, _ = image.shape
    out = np.zeros_like(image)
    for i in range(width):
        ox = math.ceil(i * point[1] / hypot - 0.5)
        oy = math.ceil(i * point[0] / hypot - 0.5)
        if abs(oy) >= h or abs(ox) >= w:
            break
        for y in range(h):
            for x in range(w):
                out[y, x] += kernel[i] * image[min(max(y + oy, 0), h - 1), min(max(x + ox, 0), w - 1)]
    return out


@pytest.mark.parametrize("severity", SEVERITIES)
def test_motion_blur_is_imagemagicks_kernel(rgb, severity) -> None:
    radius, sigma = _param("motion_blur", severity)
    angles = _rng("motion_blur", severity).uniform(-45, 45, size=len(rgb))
    got = _raw(rgb, "motion_blur", severity)
    for i, image in enumerate(_floats(rgb)):
        np.testing.assert_allclose(got[i], _imagemagick_motion(image, radius, sigma, float(angles[i])), atol=1e-12)


def _bilinear_mirror(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of an H x W x C image at float (row, col), reflect-101 outside."""
    h, w, _ = image.shape
    out = np.empty((*rows.shape, image.shape[2]))
    for index in np.ndindex(rows.shape):
        r, c = rows[index], cols[index]
        r0, c0 = math.floor(r), math.floor(c)
        fr, fc = r - r0, c - c0
        value = 0.0
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                value = value + wr * wc * image[_reflect101(r0 + dr, h), _reflect101(c0 + dc, w)]
        out[index] = value
    return out


def test_elastic_at_severity_1_is_a_pure_affine_warp(rgb) -> None:
    """alpha = sigma = 0 at severity 1: only the random affine of make_cifar_c moves pixels."""
    affine = _param("elastic_transform", 1)[2] * 32
    rng = _rng("elastic_transform", 1)
    got = _raw(rgb, "elastic_transform", 1)
    centre, square = 16.0, 32 // 3
    # float32 anchor points, as make_cifar_c (its pts1 + uniform(...).astype(float32) sums in float32)
    src = np.float32([[centre + square] * 2, [centre + square, centre - square], [centre - square] * 2])
    for i, image in enumerate(_floats(rgb)):
        dst = src + rng.uniform(-affine, affine, size=(3, 2)).astype(np.float32)
        rng.uniform(-1, 1, size=(32, 32)), rng.uniform(-1, 1, size=(32, 32))  # the zero displacement fields
        forward = np.linalg.solve(np.hstack([src, np.ones((3, 1))]), dst.astype(np.float64)).T  # (x, y) -> (x', y'), OpenCV's M
        inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))  # warpAffine samples the input at M^-1 (x, y)
        ys, xs = np.mgrid[0:32, 0:32].astype(np.float64)
        in_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
        in_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
        np.testing.assert_allclose(got[i], _bilinear_mirror(image, in_y, in_x), atol=1e-9)
    assert not np.allclose(got, _floats(rgb), atol=1e-3)  # the warp moved the pixels


@pytest.mark.parametrize("severity", SEVERITIES)
def test_elastic_is_deterministic_and_bounded(rgb, severity) -> None:
    first = C.corrupt(rgb, "elastic_transform", severity, seed=3)
    np.testing.assert_array_equal(first, C.corrupt(rgb, "elastic_transform", severity, seed=3))
    assert not np.array_equal(first, C.corrupt(rgb, "elastic_transform", severity, seed=4))
    raw = _raw(rgb, "elastic_transform", severity)
    # bilinear resampling never leaves the input's range
    assert raw.min() >= _floats(rgb).min() - 1e-9 and raw.max() <= _floats(rgb).max() + 1e-9
    # a warp, not a new image: the square's image stays mostly where it was
    assert np.mean(np.abs(first[2].astype(int) - rgb[2].astype(int)) < 40) > 0.7


RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur", "elastic_transform"}


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_deterministic_under_a_seed_and_seeded_where_random(rgb, name) -> None:
    a = C.corrupt(rgb, name, 3, seed=7)
    np.testing.assert_array_equal(a, C.corrupt(rgb, name, 3, seed=7))
    other = C.corrupt(rgb, name, 3, seed=8)
    assert (not np.array_equal(a, other)) == (name in RANDOM)
    assert a.dtype == np.uint8 and a.shape == rgb.shape


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_small_grey_images_keep_shape_and_type(name) -> None:
    """The size rule on 8 x 8 one-channel images (the embedded digits)."""
    digits = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    for severity in C.SEVERITIES:
        out = C.corrupt(digits, name, severity)
        assert out.shape == digits.shape and out.dtype == np.uint8


def test_size_rule_scales_spatial_parameters_only() -> None:
    """At 8 x 8 px pixelate keeps its fraction (int(8 c) = 7, 7, 6, 6, 5) and blur sigmas shrink by 8/32."""
    from PIL import Image

    image = np.random.default_rng(1).integers(0, 256, size=(1, 8, 8, 1), dtype=np.uint8)
    sizes = []
    for severity in C.SEVERITIES:
        size = int(8 * _param("pixelate", severity))
        sizes.append(size)
        pil = Image.fromarray(image[0, :, :, 0], "L").resize((size, size), Image.BOX).resize((8, 8), Image.BOX)
        np.testing.assert_array_equal(C.corrupt(image, "pixelate", severity)[0, :, :, 0], np.asarray(pil))
    assert sizes == [7, 7, 6, 6, 5]
    from skimage.filters import gaussian

    x = image.astype(np.float64) / 255
    got = C._FUNCTIONS["gaussian_blur"](x, 1.0, _rng("gaussian_blur", 5), 8 / 32)
    np.testing.assert_allclose(got[0], gaussian(x[0], sigma=0.25, channel_axis=-1, mode="nearest"), atol=1e-12)


def test_bad_names_and_severities_are_refused(rgb) -> None:
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt(rgb, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(rgb, "contrast", 6)
