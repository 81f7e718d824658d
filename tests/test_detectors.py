"""Detectors against pytorch-ood on the same model and data, and HALO's own scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_ood.detector import ODIN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax

from halo_bench.core.errors import HaloBenchError
from halo_bench.data import load_split
from halo_bench.detectors import DETECTORS, DetectorContext, detectors_for
from halo_bench.evaluate.metrics import auroc
from halo_bench.evaluate.metrics import auroc as metrics_auroc
from halo_bench.features.passes import forward_pass
from halo_bench.models.checkpoint import load_checkpoint


def _setup(path, registry, n_eval: int = 200):
    model, meta = load_checkpoint(path)
    suite = registry.suite("digits")
    cfg = meta["data_config"]
    id_spec = registry.dataset(suite.id)
    train_ds = load_split(id_spec, "train", cfg)
    # ID test and an OOD set stacked, so the comparison covers both kinds of input.
    test_x = load_split(id_spec, "test", cfg).tensors[0][: n_eval // 2]
    ood_x = load_split(registry.dataset("sk-photos"), "test", cfg).tensors[0][: n_eval // 2]
    eval_ds = torch.utils.data.TensorDataset(torch.cat([test_x, ood_x]), torch.zeros(len(test_x) + len(ood_x)).long())
    device = torch.device("cpu")
    ctx = DetectorContext(model=model, device=device, data_config=cfg, batch_size=64,
                          train=forward_pass(model, train_ds, device))
    return model, ctx, eval_ds, forward_pass(model, eval_ds, device), train_ds


def _ours(name: str, ctx, outputs, dataset) -> np.ndarray:
    det = DETECTORS[name]()
    if det.needs_train:
        det.fit(ctx)
    return det.score(ctx, outputs, dataset)


def test_logit_detectors_match_pytorch_ood(tiny_runs, registry) -> None:
    model, ctx, ds, outputs, _ = _setup(tiny_runs["cce"], registry)
    x = ds.tensors[0]
    with torch.no_grad():
        refs = {
            "msp": -MaxSoftmax(model).predict(x),
            "maxlogit": -MaxLogit(model).predict(x),
            "energy": -EnergyBased(model).predict(x),
        }
    for name, ref in refs.items():
        ours = _ours(name, ctx, outputs, ds)
        ours = np.exp(ours) if name == "msp" else ours  # msp is stored as log MSP
        np.testing.assert_allclose(ours, ref.double().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_odin_matches_pytorch_ood(tiny_runs, registry) -> None:
    model, ctx, ds, outputs, _ = _setup(tiny_runs["cce"], registry)
    ref = ODIN(model, eps=0.0014, temperature=1000.0, norm_std=list(ctx.data_config["std"]))
    expected = -torch.cat([ref.predict(x) for (x,) in torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(ds.tensors[0]), batch_size=64)])
    ours = np.exp(_ours("odin", ctx, outputs, ds))  # stored as the log of ODIN's MSP
    np.testing.assert_allclose(ours, expected.double().numpy(), rtol=0, atol=1e-6)
    # The perturbation matters: ODIN is not MSP at temperature T.
    plain = torch.softmax(outputs.logits.double() / 1000.0, dim=1).max(dim=1).values.numpy()
    assert not np.allclose(ours, plain, rtol=0, atol=1e-9)


def test_mahalanobis_matches_pytorch_ood(tiny_runs, registry) -> None:
    model, ctx, ds, outputs, _ = _setup(tiny_runs["cce"], registry)
    ref = Mahalanobis(model.forward_features)
    ref.fit_features(ctx.train.features, ctx.train.labels)
    theirs = ref.predict_features(outputs.features).double().numpy()
    ours = _ours("mahalanobis", ctx, outputs, ds)
    # pytorch-ood's covariance is the sum of outer products (ours: their mean), so its distances
    # are ours / N, and it scores 0.5 * min distance (a Gaussian log-density term).
    np.testing.assert_allclose(ours, -2 * len(ctx.train.labels) * theirs, rtol=1e-4)


def test_halo_abstain_is_log_one_minus_p_and_ranks_as_energy(tiny_runs, registry) -> None:
    model, ctx, ds, outputs, _ = _setup(tiny_runs["halo"], registry)
    abstain = _ours("halo_abstain", ctx, outputs, ds)
    p_abstain = outputs.logits.double().softmax(dim=1)[:, -1].numpy()
    np.testing.assert_allclose(np.exp(abstain), 1.0 - p_abstain, rtol=1e-9)
    energy = _ours("energy", ctx, outputs, ds)
    assert np.array_equal(np.argsort(abstain, kind="stable"), np.argsort(energy, kind="stable"))


@pytest.mark.parametrize("seed", range(3))
def test_halo_abstain_keeps_order_where_one_minus_p_rounds_to_one(seed: int) -> None:
    from halo_bench.features.passes import SplitOutputs

    gen = torch.Generator().manual_seed(seed)
    k = 5
    logits = torch.cat([torch.randn(400, k, generator=gen) * 30 + 40, torch.zeros(400, 1)], dim=1)
    outputs = SplitOutputs(logits, torch.zeros(400, 6), torch.zeros(400).long())
    ctx = DetectorContext(model=_FakeHalo(k), device=torch.device("cpu"), data_config={})
    abstain = DETECTORS["halo_abstain"]().score_outputs(ctx, outputs)
    energy = DETECTORS["energy"]().score_outputs(ctx, outputs)
    assert np.sum(1.0 - logits.double().softmax(1)[:, -1].numpy() == 1.0) > 100  # many would tie
    assert auroc(abstain[:200], abstain[200:]) == auroc(energy[:200], energy[200:])


class _FakeHalo(torch.nn.Module):
    abstain = True

    def __init__(self, k: int) -> None:
        super().__init__()
        self.num_classes = k


def test_halo_distance_is_min_squared_distance_to_centred_centroids(tiny_runs, registry) -> None:
    model, ctx, ds, outputs, _ = _setup(tiny_runs["halo"], registry)
    c = model.head.centroids.detach().double()
    c = c - c.mean(0)
    z = outputs.features.double()
    expected = -(((z[:, None] - c[None]) ** 2).sum(-1) / z.shape[1]).min(1).values.numpy()
    np.testing.assert_allclose(_ours("halo_distance", ctx, outputs, ds), expected, rtol=1e-9, atol=1e-12)


def test_msp_of_halo_model_reads_the_k_plus_one_softmax(tiny_runs, registry) -> None:
    model, ctx, ds, outputs, _ = _setup(tiny_runs["halo"], registry)
    assert outputs.logits.shape[1] == model.num_classes + 1
    expected = outputs.logits.double().softmax(1)[:, :-1].max(1).values.numpy()
    np.testing.assert_allclose(np.exp(_ours("msp", ctx, outputs, ds)), expected, rtol=1e-12)


def test_detector_selection(tiny_runs) -> None:
    names = [d.name for d in detectors_for(None, abstain=False)]
    assert "halo_abstain" not in names and {"msp", "energy", "odin", "mahalanobis"} <= set(names)
    assert {"halo_abstain", "halo_distance"} <= {d.name for d in detectors_for(None, abstain=True)}
    with pytest.raises(HaloBenchError, match="Did you mean 'energy'"):
        detectors_for(["enrgy"], abstain=False)
    with pytest.raises(HaloBenchError, match="trained with CCE"):
        detectors_for(["halo_abstain"], abstain=False)
    with pytest.raises(HaloBenchError, match="no parameter"):
        DETECTORS["energy"](temprature=2.0)


@pytest.mark.parametrize("amp_dtype, memory_format", [(torch.bfloat16, torch.channels_last), (None, None)])
def test_odin_runs_in_the_evaluations_precision_and_memory_format(amp_dtype, memory_format) -> None:
    from halo_bench.models.classifier import build_model

    model = build_model("test_resnet", "cce", num_classes=4, in_chans=3, seed=0).eval()
    seen = []  # per forward: (gradient pass?, autocast on?, channels-last input?, input dtype)
    model.register_forward_pre_hook(lambda _, args: seen.append(
        (torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"),
         args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous(),
         args[0].dtype)))
    ds = torch.utils.data.TensorDataset(torch.randn(6, 3, 8, 8), torch.zeros(6).long())
    ctx = DetectorContext(model=model, device=torch.device("cpu"), batch_size=6, amp_dtype=amp_dtype,
                          memory_format=memory_format, data_config={"std": [0.2, 0.25, 0.3]})
    scores = DETECTORS["odin"](temperature=10.0).score(ctx, None, ds)
    on, cl = amp_dtype is not None, memory_format is not None
    assert seen == [(True, on, cl, torch.float32), (False, on, cl, torch.float32)]  # both passes
    assert scores.dtype == np.float64 and np.isfinite(scores).all()


class _Logits(torch.nn.Module):
    """A 'model' whose inputs are its logits (N x C x 1 x 1): ODIN with eps = 0 scores them as they are."""

    def __init__(self, k: int, abstain: bool) -> None:
        super().__init__()
        self.num_classes, self.abstain = k, abstain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@pytest.mark.parametrize("abstain", [False, True])
def test_softmax_scores_rank_saturated_logits_exactly(abstain: bool) -> None:
    from sklearn.metrics import roc_auc_score

    from halo_bench.features.passes import SplitOutputs

    gen = torch.Generator().manual_seed(5)
    # Two classes, the top one ahead by 40-80: float32 and float64 softmax both round to exactly 1.
    margin = torch.cat([45 + 35 * torch.rand(300, generator=gen), 40 + 35 * torch.rand(300, generator=gen)]).double()
    top = torch.rand(600, generator=gen) < 0.5  # which of the two classes leads
    logits = torch.where(top[:, None], torch.stack([margin, torch.zeros(600).double()], 1),
                         torch.stack([torch.zeros(600).double(), margin], 1))
    if abstain:  # HALO: K logits relative to the abstain class, then its zero column
        logits = torch.cat([logits, torch.zeros(600, 1).double()], 1)
    old_msp = logits.softmax(dim=1)[:, :2].max(dim=1).values
    assert (old_msp == 1.0).all() and (logits.float().softmax(dim=1)[:, :2].max(dim=1).values == 1.0).all()
    # MSP and GEN are monotone in the margin for two classes: their exact AUROC is the margin's.
    exact = roc_auc_score(np.r_[np.ones(300), np.zeros(300)], margin.numpy())
    assert 0.55 < exact < 0.95 and metrics_auroc(old_msp[:300], old_msp[300:]) == 0.5  # old MSP: all tied
    ctx = DetectorContext(model=_Logits(2, abstain), device=torch.device("cpu"), data_config={"std": [1.0] * logits.shape[1]},
                          batch_size=128)
    outputs = SplitOutputs(logits.float(), torch.zeros(600, 1), torch.zeros(600).long())
    ds = torch.utils.data.TensorDataset(logits.float()[:, :, None, None], torch.zeros(600).long())
    scores = {name: DETECTORS[name]().score(ctx, outputs, ds) for name in ("msp", "gen")}
    scores["odin"] = DETECTORS["odin"](temperature=1.0, eps=0.0).score(ctx, outputs, ds)
    for name, s in scores.items():
        assert metrics_auroc(s[:300], s[300:]) == pytest.approx(exact, abs=1e-12), name
    # Where nothing saturates, the log score is the log of the plain float64 MSP.
    mild = SplitOutputs(logits.float() / 20, torch.zeros(600, 1), torch.zeros(600).long())
    np.testing.assert_allclose(np.exp(DETECTORS["msp"]().score(ctx, mild, ds)),
                               (logits / 20).float().double().softmax(1)[:, :2].max(1).values.numpy(), rtol=1e-12)


def test_stats_reads_the_confidence_from_the_log_msp_column() -> None:
    from halo_bench.features.passes import SplitOutputs
    from halo_bench.report.stats import confidence, load_scores, reliability_bins

    logits = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.999, 0.0005, 0.0005]]).log()
    ctx = DetectorContext(model=_Logits(3, False), device=torch.device("cpu"), data_config={})
    log_msp = DETECTORS["msp"]().score_outputs(ctx, SplitOutputs(logits, torch.zeros(3, 1), torch.zeros(3).long()))
    assert (log_msp < 0).all()
    frame = pd.DataFrame({"dataset": "d", "group": "id", "label": [0, 1, 0], "pred": [0, 0, 0], "msp": log_msp})
    msp = logits.double().softmax(dim=1).max(dim=1).values.numpy()
    np.testing.assert_allclose(load_scores(frame, ["msp"]).conf, msp, rtol=1e-12)
    np.testing.assert_array_equal(confidence(np.array([0.7, 0.4])), [0.7, 0.4])  # files that stored MSP itself
    for a, b in zip(reliability_bins(log_msp, np.ones(3)), reliability_bins(np.exp(log_msp), np.ones(3)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
