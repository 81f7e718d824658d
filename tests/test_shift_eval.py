"""`eval --shift` on the embedded suite: the shift section of the results document, the
full-spectrum metrics against scikit-learn, the rejection rate, the feature cache for shifted
passes (a second evaluation runs the model on nothing and generates no image), ODIN left out,
and accuracy falling with severity for strong corruptions."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clirun import cli_fails, cli_ok

from halo_bench.data import corruptions as C
from halo_bench.evaluate import metrics
from halo_bench.models.classifier import Classifier
from halo_bench.results import check_results, evaluation_name

STRONG = ("contrast", "brightness", "zoom_blur")


def test_fsood_metrics_match_scikit_learn_with_shifted_id_relabelled_as_id() -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    clean, shifted, ood = rng.normal(2, 1, 300), rng.normal(1, 1.2, 250), rng.normal(0, 1, 200)
    shifted[:20] = ood[:20]  # ties between shifted ID and OOD
    got = metrics.fsood_metrics(clean, shifted, ood)
    is_id = np.r_[np.ones(550), np.zeros(200)]
    scores = np.r_[clean, shifted, ood]
    assert got["auroc"] == pytest.approx(100 * roc_auc_score(is_id, scores), abs=1e-10)
    fpr, tpr, _ = roc_curve(is_id, scores, drop_intermediate=False)
    assert got["fpr95"] == pytest.approx(100 * fpr[np.argmax(tpr >= 0.95)], abs=1e-10)
    fpr, tpr, _ = roc_curve(1 - is_id, -scores, drop_intermediate=False)
    assert got["fpr95_openood"] == pytest.approx(100 * fpr[np.argmax(tpr >= 0.95)], abs=1e-10)
    # not the clean-only numbers: the shifted ID moved them
    assert abs(got["auroc"] - metrics.ood_metrics(clean, ood)["auroc"]) > 1


def test_rejection_rate_at_the_clean_95_tpr_threshold() -> None:
    rng = np.random.default_rng(1)
    clean, shifted = rng.normal(0, 1, 400), rng.normal(-1, 1, 300)
    threshold = np.sort(clean)[::-1][int(np.ceil(0.95 * 400)) - 1]  # the 380th largest keeps 95% of 400
    assert np.mean(clean >= threshold) == 0.95
    assert metrics.rejection_rate(clean, shifted) == pytest.approx(100 * np.mean(shifted < threshold), abs=1e-12)
    assert metrics.rejection_rate(clean, clean) == pytest.approx(5.0)
    assert metrics.rejection_rate(clean, clean + 100) == 0.0


def test_evaluation_name_says_shift() -> None:
    assert evaluation_name(shift="shift") == "shift"
    assert evaluation_name(["msp"], shift="shift-gaussian_noise+contrast-sev15") == \
        "det-msp_shift-gaussian-noise+contrast-sev15"
    assert evaluation_name() == ""


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Batches through any Classifier's backbone, and corruptions generated."""
    counter = {"backbone": 0, "corrupt": 0}
    forward = Classifier.forward_penultimate

    def counted(self, x):
        counter["backbone"] += 1
        return forward(self, x)

    corrupt = C.corrupt

    def generated(*args, **kwargs):
        counter["corrupt"] += 1
        return corrupt(*args, **kwargs)

    monkeypatch.setattr(Classifier, "forward_penultimate", counted)
    monkeypatch.setattr(C, "corrupt", generated)
    return counter


def _shift_doc(folder: Path) -> dict:
    (path,) = folder.glob("results*shift*.json")
    return check_results(json.loads(path.read_text()), path)


def test_eval_shift_end_to_end_and_cached(tiny_runs, tmp_path: Path, calls) -> None:
    ckpt = tmp_path / "run" / "ckpt.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_runs["cce"], ckpt)
    args = ("eval", ckpt, "--shift", ",".join(STRONG), "--ood", "faces", "--device", "cpu")
    printed = cli_ok(*args, "--detectors", "msp,energy,odin", "--out", tmp_path / "a")
    assert "shift (cifar-c-style, 3 corruptions" in printed and "shift time: 15 shifted splits" in printed
    doc = _shift_doc(tmp_path / "a")
    assert doc["evaluation"]["name"].startswith("det-msp+energy+odin_ood-faces_shift-contrast+brig")  # long: digest
    shift = doc["shift"]
    assert shift["dataset"] == "cifar-c-style" and shift["kind"] == "generated" and shift["seed"] == 0
    assert shift["corruptions"] == ["zoom_blur", "contrast", "brightness"] and shift["severities"] == [1, 2, 3, 4, 5]
    assert shift["detectors"] == ["msp", "energy"] and set(shift["excluded_detectors"]) == {"odin"}
    assert "gradient passes" in shift["excluded_detectors"]["odin"]
    n = doc["datasets"]["digits"]["n"]
    split = shift["splits"]["contrast"]["3"]
    assert split["n"] == n and split["dataset"] == "cifar-c-style/contrast/3"
    assert set(split["fsood"]["msp"]["sets"]) == {"faces"} and set(split["fsood"]["msp"]) == {"sets", "far"}
    assert {"acc", "ece", "aece", "nll", "brier", "aurc", "ts_ece", "ts_aece", "ts_nll", "ts_brier",
            "ts_aurc"} <= set(split["id_metrics"])
    assert shift["temperature"] == pytest.approx(doc["id_metrics"]["ts_temperature"])
    assert shift["clean"]["id_metrics"]["acc"] == pytest.approx(doc["id_metrics"]["acc"])
    assert shift["clean"]["rejection"]["msp"] <= 5.0 + 1e-9
    mean = np.mean([shift["splits"][c]["5"]["id_metrics"]["ece"] for c in STRONG])
    assert shift["mean"]["5"]["id_metrics"]["ece"] == pytest.approx(mean)
    assert {"shift_forward_passes", "shift_detectors", "shift_metrics", "forward_passes"} <= set(doc["timing_seconds"])
    # strong corruptions: accuracy never rises with severity, and severity 5 costs at least 20 points
    for corruption in STRONG:
        accs = [doc["id_metrics"]["acc"]] + [shift["splits"][corruption][str(s)]["id_metrics"]["acc"]
                                             for s in range(1, 6)]
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(accs)), (corruption, accs)
        assert accs[-1] < accs[0] - 20, (corruption, accs)
    assert calls["corrupt"] == 15
    # the second evaluation (without ODIN, whose gradient passes are never cached) reads every pass from the cache
    calls.update(backbone=0, corrupt=0)
    cli_ok(*args, "--detectors", "msp,energy", "--out", tmp_path / "b")
    again = _shift_doc(tmp_path / "b")
    assert calls == {"backbone": 0, "corrupt": 0}, "a cached shifted split ran the model or made its images again"
    shifted = [label for label in again["feature_cache"]["read"] if label.startswith("cifar-c-style/")]
    assert len(shifted) == 15 and again["feature_cache"]["computed"] == []
    assert again["shift"]["splits"] == shift["splits"]
    # CSV and JSON carry the shift tables' cells too
    table = pd.read_csv(io.StringIO(cli_ok("report", tmp_path / "a", "--format", "csv")))
    shifted = table[table["section"] == "shift"]
    ece5 = shifted[(shifted["group"] == "id") & (shifted["metric"] == "ece") & (shifted["severity"].astype(str) == "5")]
    assert len(ece5) == 1 and ece5["mean"].iloc[0] == pytest.approx(mean)
    assert set(shifted["group"]) == {"id", "far", "rejection"} and set(table["section"]) == {"clean", "shift"}
    for corruption in STRONG:  # the per-corruption table's cells: each the mean over the severities
        row = shifted[(shifted["corruption"] == corruption) & (shifted["metric"] == "acc")]
        expected = np.mean([shift["splits"][corruption][str(v)]["id_metrics"]["acc"] for v in range(1, 6)])
        assert len(row) == 1 and row["mean"].iloc[0] == pytest.approx(expected), corruption
    rows = json.loads(cli_ok("report", tmp_path / "a", "--format", "json"))["rows"]
    assert sum(r["section"] == "shift" for r in rows) == len(shifted)


def test_shift_options_are_checked_before_work(tiny_runs) -> None:
    run = tiny_runs["cce"].parent
    cli_fails("eval", run, "--severities", "5", match="add --shift")
    cli_fails("eval", run, "--shift", "fog", match="needs image assets")
    cli_fails("eval", run, "--shift", "snowy", match="unknown corruption or group")
    cli_fails("eval", run, "--shift", "all", "--severities", "0,2", match="severities from 1 to 5")
    cli_fails("bench", "--shift", "all", "--launcher", "local", "--seeds", "0", "--epochs", "1",
              match="--launcher inline")
