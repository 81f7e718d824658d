"""--tune: choices come from validation data only, are the grid's AUROC argmax, and are reported
as NAME[tuned] beside the defaults; temperature scaling is fitted on ID val."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from halo_bench.core.errors import HaloBenchError
from halo_bench.data import load_split
from halo_bench.detectors import DETECTORS, DetectorContext, make_detector
from halo_bench.evaluate import metrics
from halo_bench.evaluate.run import EvalConfig, evaluate
from halo_bench.evaluate.tune import ValidationData, grid_points, tune_detector
from halo_bench.features.passes import forward_pass
from halo_bench.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def tuned_evals(tiny_runs, tmp_path_factory):
    """Two --tune evaluations of one checkpoint against different OOD *test* sets."""
    tmp = tmp_path_factory.mktemp("tune")
    ckpt = tmp / "run" / "ckpt.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_runs["halo"], ckpt)
    out = []
    for ood in (["noise"], ["digits-6to9"]):
        cfg = EvalConfig(checkpoint=str(ckpt), detectors=["knn", "react", "ash", "gen", "vim", "mds"], ood=ood,
                         out=str(tmp / ood[0]), device="cpu", tune=True)
        out.append(evaluate(cfg)[0])
    return ckpt, out


def test_tuned_rows_beside_defaults_chosen_on_validation_only(tuned_evals) -> None:
    _, (a, b) = tuned_evals
    assert {"knn", "knn[tuned]", "react[tuned]", "ash[tuned]", "gen[tuned]"} <= set(a["ood"])
    assert "mds[tuned]" not in a["ood"]  # nothing to tune
    # OpenOOD's ViM dims (256, 1000) do not fit test_resnet's 96 features: no row, the reason recorded.
    assert "vim[tuned]" not in a["ood"] and "must be smaller" in a["detectors"]["vim"]["tuning"]["skipped"]
    for label in ("knn[tuned]", "react[tuned]", "ash[tuned]", "gen[tuned]"):
        chosen = a["detectors"][label]["tuning"]["chosen"]
        # Other OOD test sets, same choice: the test data played no part in it.
        assert chosen == b["detectors"][label]["tuning"]["chosen"]
        grid = DETECTORS[label.split("[")[0]].tune_grid
        assert all(chosen[k] in grid[k] for k in chosen)
        assert a["detectors"][label]["params"] == {**a["detectors"][label]["params"], **chosen}
    assert a["detectors"]["knn"]["params"] == {"k": 50.0}  # the default row keeps its defaults


def test_tuning_picks_the_validation_auroc_argmax(tiny_runs, registry) -> None:
    model, meta = load_checkpoint(tiny_runs["cce"])
    cfg = meta["data_config"]
    dev = __import__("torch").device("cpu")
    spec = registry.dataset("digits")
    ctx = DetectorContext(model=model, device=dev, data_config=cfg,
                          train=forward_pass(model, load_split(spec, "train", cfg), dev, show_progress=False))
    id_ds, ood_ds = load_split(spec, "val", cfg), load_split(registry.dataset("sk-heldout"), "val", cfg)
    val = ValidationData(forward_pass(model, id_ds, dev, show_progress=False), id_ds,
                         {"heldout": (forward_pass(model, ood_ds, dev, show_progress=False), ood_ds)})
    tuned = tune_detector(DETECTORS["react"](), ctx, val)
    expected = []
    for point in grid_points(DETECTORS["react"]()):
        det = DETECTORS["react"](**point)
        det.fit(ctx)
        expected.append(metrics.auroc(det.score_outputs(ctx, val.id_outputs),
                                      det.score_outputs(ctx, val.ood["heldout"][0])))
    assert tuned.label == "react[tuned]"
    assert tuned.params["percentile"] == DETECTORS["react"].tune_grid["percentile"][int(np.argmax(expected))]
    assert [t["val_auroc"] for t in tuned.tuning["trials"]] == expected
    # knn's grid reaches k = 1000, more than the 650 train samples: skipped and said so, not fatal.
    knn = tune_detector(DETECTORS["knn"](), ctx, val)
    assert any("exceeds" in t.get("skipped", "") for t in knn.tuning["trials"])
    # A setting the grid does not cover stays fixed and names the tuned row.
    ash_b = make_detector("ash", {"variant": "b"}, abstain=False)
    tuned_b = tune_detector(ash_b, ctx, val)
    assert tuned_b.label == "ash[variant=b][tuned]" and tuned_b.params["variant"] == "b"
    assert tune_detector(make_detector("ash", {"variant": "s"}, abstain=False), ctx, val).label == "ash[tuned]"
    # No grid point fits (ViM's dims vs 96 features): no tuned detector, the base records why.
    vim = DETECTORS["vim"]()
    assert tune_detector(vim, ctx, val) is None and "must be smaller" in vim.tuning["skipped"]


def _nll(outputs, temperature: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Mean -log max(softmax(logits / T)[y], floor) in float64 for each T, over every column (HALO's
    abstain too). The fit minimises it without a floor; the reported NLL floors p at 1e-12 (protocol)."""
    from scipy.special import log_softmax

    logits = outputs.logits.double().numpy()[None] / np.asarray(temperature, dtype=np.float64)[:, None, None]
    rows, labels = np.arange(logits.shape[1]), outputs.labels.numpy()
    log_p = log_softmax(logits, axis=2)[:, rows, labels]
    return -(np.maximum(log_p, np.log(floor)) if floor else log_p).mean(axis=1)


def test_temperature_scaling_minimises_the_validation_nll(tuned_evals, registry) -> None:
    """The reported temperature is the validation NLL's minimum (a dense float64 grid finds no
    better one), and the reported test NLL is that of the scaled softmax."""
    ckpt, (a, _) = tuned_evals
    idm = a["id_metrics"]
    t = idm["ts_temperature"]
    model, meta = load_checkpoint(ckpt)
    cpu, spec = __import__("torch").device("cpu"), registry.dataset("digits")
    val, test = (forward_pass(model, load_split(spec, split, meta["data_config"]), cpu, show_progress=False)
                 for split in ("val", "test"))
    grid = np.geomspace(1e-2, 1e2, 8001)  # steps of 0.12%
    curve = _nll(val, grid)
    fitted, unscaled = _nll(val, [t, 1.0])
    assert fitted <= curve.min() + 1e-12 and fitted <= unscaled
    assert grid[np.argmin(curve)] == pytest.approx(t, rel=2.5e-3)
    assert idm["ts_nll"] == pytest.approx(float(_nll(test, [t], 1e-12)[0]), rel=1e-9)
    assert idm["nll"] == pytest.approx(float(_nll(test, [1.0], 1e-12)[0]), rel=1e-9)


def test_tune_needs_validation_sets(tiny_runs, tmp_path: Path, registry) -> None:
    import yaml

    from halo_bench.data import load_registry
    from halo_bench.data.registry import DEFAULT_REGISTRY

    data = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    del data["suites"]["digits"]["ood_val"]
    custom = tmp_path / "reg.yaml"
    custom.write_text(yaml.safe_dump(data))
    with pytest.raises(HaloBenchError, match="--tune needs validation data"):
        evaluate(EvalConfig(checkpoint=str(tiny_runs["cce"]), detectors=["knn"], out=str(tmp_path), device="cpu",
                            tune=True, ood=["noise"]), load_registry(custom))
