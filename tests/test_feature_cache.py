"""The on-disk feature cache: a second evaluation of one checkpoint runs no forward pass over
what is cached, reads the same numbers, and never trusts a file that does not match its key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from halo_bench.evaluate.run import EvalConfig, evaluate
from halo_bench.features.cache import CACHE_DIR
from halo_bench.models.classifier import Classifier


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Count every batch any Classifier runs through its backbone."""
    counter = {"backbone": 0}
    original = Classifier.forward_penultimate, Classifier.forward_features

    def counted(index):
        def wrapper(self, x):
            counter["backbone"] += 1
            return original[index](self, x)
        return wrapper

    monkeypatch.setattr(Classifier, "forward_penultimate", counted(0))
    monkeypatch.setattr(Classifier, "forward_features", counted(1))
    return counter


def _eval(ckpt: Path, out: Path, detectors: str, **kwargs):
    # One OOD set keeps it fast: ID test, noise, ID val and (for fitted detectors) ID train.
    return evaluate(EvalConfig(checkpoint=str(ckpt), detectors=detectors.split(","), out=str(out), device="cpu",
                               ood=["noise"], **kwargs))[0]


def _scores(out: Path) -> pd.DataFrame:
    """The one evaluation's scores in `out` (named by its detectors and sets)."""
    (path,) = out.glob("scores*.csv.gz")
    return pd.read_csv(path)


def test_second_eval_runs_no_forward_pass(tiny_runs, registry, tmp_path: Path, calls) -> None:
    ckpt = tmp_path / "run" / "ckpt.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_runs["cce"], ckpt)

    first = _eval(ckpt, tmp_path / "a", "msp,knn")
    assert calls["backbone"] > 0
    assert first["feature_cache"]["read"] == [] and "digits/train" in first["feature_cache"]["computed"]
    files = sorted((ckpt.parent / CACHE_DIR).glob("*.pt"))
    assert len(files) == 4  # ID test, noise, ID train, ID val (temperature scaling)

    calls["backbone"] = 0
    second = _eval(ckpt, tmp_path / "b", "energy,vim,react,ash,gen,mds,rmds,mahalanobis,knn:k=10")
    assert calls["backbone"] == 0, "a cached split ran the model again"
    assert second["feature_cache"]["computed"] == [] and len(second["feature_cache"]["read"]) == 4
    assert second["id_metrics"] == first["id_metrics"]
    cold = _eval(ckpt, tmp_path / "c", "knn", cache=False)  # the same numbers without the cache
    assert calls["backbone"] > 0 and cold["feature_cache"]["folder"] is None
    pd.testing.assert_series_equal(_scores(tmp_path / "c")["knn"], _scores(tmp_path / "a")["knn"])
    assert sorted((ckpt.parent / CACHE_DIR).glob("*.pt")) == files  # --no-cache writes nothing

    # A truncated file and a file holding another split's outputs are both recomputed, not trusted.
    files[0].write_bytes(files[0].read_bytes()[:100])
    shutil.copy(files[2], files[1])
    calls["backbone"] = 0
    third = _eval(ckpt, tmp_path / "d", "knn")
    assert len(third["feature_cache"]["computed"]) == 2 and calls["backbone"] > 0
    pd.testing.assert_frame_equal(_scores(tmp_path / "d"), _scores(tmp_path / "a")[_scores(tmp_path / "d").columns])


def test_cache_key_separates_checkpoints(tiny_runs, tmp_path: Path, calls) -> None:
    """Two checkpoints in one folder (or one overwritten by training) never share a pass."""
    ckpt = tmp_path / "run" / "ckpt.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_runs["cce"], ckpt)
    _eval(ckpt, tmp_path / "a", "msp")
    shutil.copy(tiny_runs["halo"], ckpt)
    calls["backbone"] = 0
    res = _eval(ckpt, tmp_path / "b", "msp")
    assert len(list((ckpt.parent / CACHE_DIR).glob("*.pt"))) == 6  # (ID test, noise, ID val) x 2 checkpoints
    assert res["feature_cache"]["read"] == [] and calls["backbone"] > 0
    assert torch.load(next((ckpt.parent / CACHE_DIR).glob("*.pt")), weights_only=True)["key"]["checkpoint_sha256"]


@pytest.mark.parametrize("field", ["logits", "features", "penultimate"])
def test_non_finite_outputs_are_refused_and_never_cached(tmp_path: Path, field: str) -> None:
    from halo_bench.core.errors import HaloBenchError
    from halo_bench.features.cache import CacheKey, FeatureCache
    from halo_bench.features.passes import SplitOutputs

    outputs = {"logits": torch.randn(4, 3), "features": torch.randn(4, 5), "penultimate": torch.randn(4, 7),
               "labels": torch.arange(4)}
    outputs[field][2, 1] = float("nan")
    cache = FeatureCache(tmp_path / CACHE_DIR)
    key = CacheKey("abc", "digits", "test", {}, "/data", {}, None)
    with pytest.raises(HaloBenchError, match=f"the model's {field} on digits/test hold NaN or inf"):
        cache.get(key, lambda: SplitOutputs(**outputs), 4)
    assert not cache.path(key).exists() and cache.misses == []
    outputs[field][2, 1] = 0.0  # finite: computed and cached
    cache.get(key, lambda: SplitOutputs(**outputs), 4)
    assert cache.path(key).is_file()
