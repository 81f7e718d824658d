"""The offline generators of the `digits` suite (halo_bench.data.embedded)."""

from __future__ import annotations

import os
import socket
from collections import Counter

import numpy as np
import pytest

from halo_bench.core.errors import HaloBenchError
from halo_bench.data import embedded as E

ID_CLASSES = [0, 1, 2, 3, 4, 5]
TEXTURES = ["brick", "grass", "gravel"]
PHOTOS = ["camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon",
          "hubble_deep_field", "motorcycle_left"]

# One small call per generator; every registered generator must appear here.
CALLS = {
    "sklearn_digits": dict(classes=ID_CLASSES, split="train"),
    "skimage_crops": dict(images=TEXTURES + PHOTOS, count=60),
    "lfw_faces": dict(count=130),
    "uniform_noise": dict(count=50),
}


def rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_every_generator_is_covered():
    assert set(E.GENERATORS) == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_output_is_digit_format(name):
    images, labels = E.generate(name, **CALLS[name])
    assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (8, 8)
    assert images.max() <= 16
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    assert isinstance(images, np.ndarray) and type(images) is np.ndarray


@pytest.mark.parametrize("name", sorted(CALLS))
def test_same_seed_same_bytes_other_seed_differs(name):
    a_img, a_lab = E.generate(name, **CALLS[name], seed=3)
    b_img, b_lab = E.generate(name, **CALLS[name], seed=3)
    assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
    c_img, _ = E.generate(name, **CALLS[name], seed=4)
    assert a_img.tobytes() != c_img.tobytes()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_outputs_do_not_alias_the_cache(name):
    first, _ = E.generate(name, **CALLS[name])
    expected = first.copy()
    first[:] = 99
    again, _ = E.generate(name, **CALLS[name])
    np.testing.assert_array_equal(again, expected)


# ---------------------------------------------------------------- sklearn digits


def test_digits_split_is_stratified_disjoint_and_complete():
    all_img, all_lab = E.sklearn_digits(ID_CLASSES, "all")
    train_img, train_lab = E.sklearn_digits(ID_CLASSES, "train", seed=7)
    test_img, test_lab = E.sklearn_digits(ID_CLASSES, "test", seed=7)

    assert len(rows(all_img)) == len(all_img)  # sklearn's digits hold no duplicates
    assert rows(train_img).isdisjoint(rows(test_img))
    assert rows(train_img) | rows(test_img) == rows(all_img)
    assert len(train_img) + len(test_img) == len(all_img)
    assert abs(len(test_img) - 0.3 * len(all_img)) <= 1

    total = Counter(all_lab.tolist())
    for part, labels in (("train", train_lab), ("test", test_lab)):
        counts = Counter(labels.tolist())
        for digit, n in total.items():
            expected = n * len(labels) / len(all_lab)
            assert abs(counts[digit] - expected) <= 1, (part, digit, counts[digit], expected)

    # Labels travel with their images: each (image, label) pair exists in the full set.
    pairs = {(img.tobytes(), int(lab)) for img, lab in zip(all_img, all_lab)}
    assert all((img.tobytes(), int(lab)) in pairs for img, lab in zip(train_img, train_lab))


def test_digits_keep_sklearn_values():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = E.sklearn_digits(list(range(10)), "all")
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)


def test_digits_class_filter():
    images, labels = E.sklearn_digits([3], "all")
    assert set(labels.tolist()) == {3} and len(images) == 183
    _, near = E.sklearn_digits([6, 7, 8, 9], "test")
    assert set(near.tolist()) == {6, 7, 8, 9}


def test_digits_test_fraction():
    test, _ = E.sklearn_digits(ID_CLASSES, "test", test_fraction=0.5)
    full, _ = E.sklearn_digits(ID_CLASSES, "all")
    assert abs(len(test) - len(full) / 2) <= 1


# ---------------------------------------------------------------- skimage crops


def test_crops_round_robin_labels():
    images, labels = E.skimage_crops(TEXTURES, count=10)
    np.testing.assert_array_equal(labels, np.arange(10) % 3)
    assert len(rows(images)) == 10


def test_crops_stretch_to_full_range():
    images, _ = E.skimage_crops(PHOTOS, count=90)
    flat = images.reshape(len(images), -1)
    nonflat = flat.max(axis=1) > 0
    assert nonflat.mean() > 0.9
    assert (flat[nonflat].min(axis=1) == 0).all() and (flat[nonflat].max(axis=1) == 16).all()


# ---------------------------------------------------------------- faces and noise


def test_faces_subset_then_crops():
    _, few = E.lfw_faces(40)
    assert len(set(few.tolist())) == 40 and few.min() >= 0 and few.max() < 100
    images, labels = E.lfw_faces(250)
    counts = np.bincount(labels, minlength=100)
    assert counts.min() == 2 and counts.max() == 3
    # The first 100 are the whole faces, the rest are crops of them.
    whole, _ = E.lfw_faces(100)
    assert rows(images[:100]) == rows(whole)


def test_faces_are_the_faces():
    import skimage.data

    faces = skimage.data.lfw_subset()[:100]
    images, labels = E.lfw_faces(100)
    for image, label in zip(images[:5], labels[:5]):
        np.testing.assert_array_equal(image, E.render_digit_format(faces[label]))


def test_noise_is_uniform_levels():
    images, labels = E.uniform_noise(400)
    assert (labels == -1).all()
    counts = np.bincount(images.ravel(), minlength=17)
    assert len(counts) == 17 and counts.min() > 0.7 * counts.mean()


# ---------------------------------------------------------------- rendering


def test_render_constant_is_zero():
    for image in (np.full((30, 40), 0.7), np.full((9, 9), 200, np.uint8), np.ones((20, 20, 3))):
        out = E.render_digit_format(image)
        assert out.dtype == np.uint8 and out.shape == (8, 8) and not out.any()


def test_render_known_gradient():
    ramp = np.tile(np.arange(64, dtype=np.float64), (64, 1))  # column j has value j
    # Column block k averages 8k..8k+7 -> 8k + 3.5; stretched: 16k/7, rounded.
    expected = np.tile(np.array([0, 2, 5, 7, 9, 11, 14, 16], np.uint8), (8, 1))
    np.testing.assert_array_equal(E.render_digit_format(ramp), expected)
    np.testing.assert_array_equal(E.render_digit_format(ramp.T), expected.T)
    # Scale and dtype do not matter: only the stretched pattern survives.
    np.testing.assert_array_equal(E.render_digit_format((ramp * 4).astype(np.uint8)), expected)
    np.testing.assert_array_equal(E.render_digit_format(ramp * 1e-6 - 5), expected)


def test_render_area_averages_non_multiples_of_8():
    image = np.zeros((12, 12))
    image[:, 9:] = 1.0  # the last 3 of 12 columns; an 8-bin covers 1.5 columns
    out = E.render_digit_format(image)
    # Bins 6 and 7 span columns 9..10.5 and 10.5..12: fully bright; bin 5 spans 7.5..9: dark.
    np.testing.assert_array_equal(out[0], [0, 0, 0, 0, 0, 0, 16, 16])


def test_render_rgb_uses_luminance():
    rng = np.random.default_rng(0)
    rgb = rng.random((40, 40, 3))
    gray = rgb @ np.array([0.2125, 0.7154, 0.0721])
    np.testing.assert_array_equal(E.render_digit_format(rgb), E.render_digit_format(gray))
    red_left = np.zeros((16, 16, 3), np.uint8)
    red_left[:, :8, 0] = 255
    out = E.render_digit_format(red_left)
    assert (out[:, :4] == 16).all() and (out[:, 4:] == 0).all()


def test_render_rgba_composites_on_white():
    transparent = np.zeros((16, 16, 4))
    assert not E.render_digit_format(transparent).any()
    half = np.zeros((16, 16, 4))
    half[:, :8, 3] = 1.0  # opaque black on the left, transparent (white) on the right
    out = E.render_digit_format(half)
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 16).all()


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 2)), np.zeros((2, 2, 2, 2)), np.zeros((0, 5)), np.full((4, 4), np.nan),
            np.array([["a", "b"]])],
)
def test_render_rejects_bad_images(bad):
    with pytest.raises(ValueError):
        E.render_digit_format(bad)


# ---------------------------------------------------------------- offline guarantee


def test_generation_never_touches_the_network(monkeypatch):
    import skimage.data
    from skimage.data import _fetchers

    def refuse(*args, **kwargs):
        raise AssertionError("the embedded suite tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    if getattr(_fetchers, "_image_fetcher", None) is not None:  # pooch, when installed
        monkeypatch.setattr(_fetchers._image_fetcher, "fetch", refuse)

    for cached in (E._digits, E._lfw_faces, E._skimage_gray, E.available_images):
        cached.cache_clear()
    package_files = set(os.listdir(os.path.dirname(skimage.data.__file__)))
    assert {"brick.png", "grass.png", "gravel.png", "lfw_subset.npy"} <= package_files

    assert set(TEXTURES + PHOTOS) <= set(E.available_images())
    E.sklearn_digits(ID_CLASSES, "train")
    E.skimage_crops(list(E.available_images()), count=len(E.available_images()))
    E.lfw_faces(120)
    E.uniform_noise(5)


# ---------------------------------------------------------------- errors


def test_unknown_generator_lists_known_names():
    with pytest.raises(ValueError, match="uniform_noise") as info:
        E.generate("uniform_nosie", count=3)
    assert "Did you mean 'uniform_noise'" in str(info.value)
    assert isinstance(info.value, HaloBenchError)


def test_unknown_image_lists_shipped_images():
    with pytest.raises(ValueError, match="Did you mean 'brick'") as info:
        E.skimage_crops(["bricks"], count=3)
    assert "gravel" in str(info.value) and "shipped" in str(info.value)
    with pytest.raises(ValueError, match="shipped"):
        E.skimage_crops(["eagle"], count=3)  # a real skimage image, but downloaded, not shipped


def test_generate_rejects_bad_parameters():
    with pytest.raises(ValueError, match="count, seed"):
        E.generate("uniform_noise", count=3, size=4)


@pytest.mark.parametrize(
    "call",
    [
        lambda: E.uniform_noise(0),
        lambda: E.uniform_noise(-2),
        lambda: E.uniform_noise(2.5),
        lambda: E.uniform_noise(True),
        lambda: E.uniform_noise(3, seed=-1),
        lambda: E.lfw_faces(0),
        lambda: E.skimage_crops(TEXTURES, count=0),
        lambda: E.skimage_crops("brick", count=3),
        lambda: E.skimage_crops([], count=3),
        lambda: E.skimage_crops(TEXTURES, count=3, min_frac=0.6, max_frac=0.5),
        lambda: E.skimage_crops(TEXTURES, count=3, min_frac=0.0),
        lambda: E.skimage_crops(TEXTURES, count=3, max_frac=1.5),
        lambda: E.sklearn_digits(ID_CLASSES, "validation"),
        lambda: E.sklearn_digits([10], "all"),
        lambda: E.sklearn_digits([-1, 0], "all"),
        lambda: E.sklearn_digits([], "all"),
        lambda: E.sklearn_digits("012", "all"),
        lambda: E.sklearn_digits([1.5], "all"),
        lambda: E.sklearn_digits(ID_CLASSES, "test", test_fraction=1.0),
        lambda: E.sklearn_digits(ID_CLASSES, "test", test_fraction=0.001),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
