"""The modern detector field (knn, vim, react, ash, gen, mds, rmds) against pytorch-ood 0.4 on
random penultimate features through real (randomly initialised) CCE and HALO models, plus the
command-line settings. Where pytorch-ood differs from OpenOOD the detector's docstring says how;
the expected values here apply exactly that difference (sign, scale) and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.detector import ASH, GEN, KNN, RMD, Mahalanobis, ReAct, ViM

from halo_bench.core.errors import HaloBenchError
from halo_bench.detectors import (
    DETECTORS,
    DetectorContext,
    detectors_for,
    parse_detector_spec,
)
from halo_bench.detectors import knn as knn_module
from halo_bench.detectors.tail import linear_map
from halo_bench.features.passes import SplitOutputs, forward_pass
from halo_bench.models.classifier import build_model

K = 6


@pytest.fixture(scope="module", params=["cce", "halo"])
def field(request):
    """A model, a context fitted on random 'ID-train' features and a random evaluation split."""
    torch.manual_seed(0)
    model = build_model("test_resnet", request.param, num_classes=K, in_chans=1, seed=0).eval()
    p = model.embed.in_features
    gen = torch.Generator().manual_seed(1)
    # ReLU-like pooled features: non-negative, a few dead units, class-dependent means.
    y_train = torch.arange(400) % K
    shift = torch.rand(K, p, generator=gen) * 2
    h_train = (torch.randn(400, p, generator=gen) + shift[y_train]).clamp(min=0)
    h_train[:, :3] = 0
    h_test = torch.cat([(torch.randn(60, p, generator=gen) + shift[torch.arange(60) % K]).clamp(min=0),
                        torch.rand(60, p, generator=gen) * 3])
    h_test[:, :3] = 0
    ctx = DetectorContext(model=model, device=torch.device("cpu"), data_config={},
                          train=_outputs(model, h_train, y_train))
    return model, ctx, _outputs(model, h_test, torch.zeros(len(h_test)).long())


def _outputs(model, h: torch.Tensor, y: torch.Tensor) -> SplitOutputs:
    with torch.no_grad():
        z = model.embed(h)
        return SplitOutputs(model.head(z).float(), z.float(), y, h.float())


def _ours(name: str, ctx, outputs, **params) -> np.ndarray:
    det = DETECTORS[name](**params)
    if det.needs_train:
        det.fit(ctx)
    return det.score_outputs(ctx, outputs)


def _class_logits(model):
    return lambda h: model.logits_from_penultimate(h.flatten(1).float())[:, :K].detach()


def test_knn_matches_pytorch_ood(field, monkeypatch) -> None:
    model, ctx, out = field
    ref = KNN(encoder=None, k=7).fit_features(ctx.train.penultimate, ctx.train.labels)
    expected = -ref.predict_features(out.penultimate).double().numpy()
    ours = _ours("knn", ctx, out, k=7)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(knn_module, "MAX_CHUNK_ENTRIES", 1000)  # 2 queries per chunk: same answer
    np.testing.assert_allclose(_ours("knn", ctx, out, k=7), ours, rtol=0, atol=1e-6)
    assert np.std(ours) > 0.01


def test_knn_k_must_stay_below_the_train_split(field, capsys) -> None:
    _, ctx, out = field
    n = len(ctx.train.labels)
    for k in (n, n + 1):  # an explicit k reaching N is an error, never a silent score
        with pytest.raises(HaloBenchError, match=f"k={k} exceeds .* {n} ID-train samples"):
            DETECTORS["knn"](k=k).fit(ctx)
    # The default k (50) on a 20-sample train split (eval --limit 20): k = 19, said and recorded.
    few = SplitOutputs(*(t[:20] for t in (ctx.train.logits, ctx.train.features, ctx.train.labels)),
                       ctx.train.penultimate[:20])
    small = DetectorContext(model=ctx.model, device=ctx.device, data_config={}, train=few)
    det = DETECTORS["knn"]()
    det.fit(small)
    assert det.settings()["k_used"] == 19 and det.settings()["params"] == {"k": 50.0}
    assert "using k=19" in capsys.readouterr().err
    bank = few.penultimate.double().numpy()
    bank /= np.linalg.norm(bank, axis=1, keepdims=True).clip(min=1e-12)
    q = out.penultimate.double().numpy()
    q /= np.linalg.norm(q, axis=1, keepdims=True).clip(min=1e-12)
    dist = np.sort(np.linalg.norm(q[:, None] - bank[None], axis=2), axis=1)
    np.testing.assert_allclose(det.score_outputs(small, out), -dist[:, 18], rtol=1e-5, atol=1e-5)


def test_vim_matches_pytorch_ood(field) -> None:
    model, ctx, out = field
    w, b = linear_map(ctx, "vim")
    h = out.penultimate.double()
    # The map is the model's own: for HALO, the K logits relative to the abstain class.
    np.testing.assert_allclose((h @ w.T + b).numpy(), _class_logits(model)(h).double().numpy(),
                               rtol=1e-4, atol=1e-4)
    if not model.abstain:
        fc, e = model.head.fc, model.embed
        np.testing.assert_allclose(w.numpy(), (fc.weight @ e.weight).double().detach().numpy(), rtol=1e-5, atol=1e-7)
    ref = ViM(encoder=None, d=20, w=w.float(), b=b.float()).fit_features(ctx.train.penultimate, ctx.train.labels)
    expected = -ref.predict_features(out.penultimate).double().numpy()
    np.testing.assert_allclose(_ours("vim", ctx, out, dim=20), expected, rtol=1e-4, atol=1e-3)


def test_vim_dim_must_fit_the_features(field) -> None:
    _, ctx, out = field
    det = DETECTORS["vim"]()  # default 256 > 96 features: falls back to half, recorded
    det.fit(ctx)
    assert det.settings()["dim_used"] == ctx.train.penultimate.shape[1] // 2
    with pytest.raises(HaloBenchError, match="must be smaller"):
        DETECTORS["vim"](dim=500).fit(ctx)


def test_react_matches_pytorch_ood(field) -> None:
    model, ctx, out = field
    ref = ReAct(backbone=None, head=_class_logits(model), percentile=0.9)
    ref.fit_feature_maps(ctx.train.penultimate, ctx.train.labels)
    with torch.no_grad():
        expected = -ref.predict_feature_maps(out.penultimate).double().numpy()
    det = DETECTORS["react"]()
    det.fit(ctx)
    assert det.threshold == pytest.approx(ref.threshold, rel=1e-6)
    np.testing.assert_allclose(det.score_outputs(ctx, out), expected, rtol=1e-4, atol=1e-4)
    # Clipping matters: ReAct is not energy of the unclipped features.
    assert not np.allclose(det.score_outputs(ctx, out), _ours("energy", ctx, out), atol=1e-3)


@pytest.mark.parametrize("percentile", [65.0, 90.0])
def test_ash_matches_pytorch_ood(field, percentile: float) -> None:
    model, ctx, out = field
    ref = ASH(backbone=None, head=_class_logits(model), variant="ash-s", percentile=percentile / 100)
    with torch.no_grad():
        expected = -ref.predict_feature_maps(out.penultimate.double()[:, :, None, None]).double().numpy()
    np.testing.assert_allclose(_ours("ash", ctx, out, percentile=percentile), expected, rtol=1e-4, atol=1e-4)


def _ash_float64(h: np.ndarray, percentile: float, variant: str) -> np.ndarray:
    """ASH by the paper's definitions, in numpy float64: keep the top n - round(n p / 100) per row."""
    n = h.shape[1]
    keep = n - int(np.round(n * percentile / 100))
    rows, top = np.arange(len(h))[:, None], np.argsort(-h, axis=1)[:, :keep]
    out = np.zeros_like(h)
    out[rows, top] = h.sum(axis=1, keepdims=True) / keep if variant == "b" else h[rows, top]
    if variant == "s":
        out *= np.exp(h.sum(axis=1) / out.sum(axis=1))[:, None]
    return out


@pytest.mark.parametrize("variant", ["s", "p", "b"])
@pytest.mark.parametrize("percentile", [65.0, 90.0])
def test_ash_variants_match_pytorch_ood_and_the_formula(field, variant: str, percentile: float) -> None:
    from scipy.special import logsumexp

    model, ctx, _ = field
    # Continuous random activations: no ties, so every implementation keeps the same units.
    h = torch.randn(80, model.embed.in_features, generator=torch.Generator().manual_seed(4)).exp()
    out = SplitOutputs(torch.zeros(80, K), torch.zeros(80, 1), torch.zeros(80).long(), h)
    ours = _ours("ash", ctx, out, percentile=percentile, variant=variant)
    ref = ASH(backbone=None, head=_class_logits(model), variant=f"ash-{variant}", percentile=percentile / 100)
    with torch.no_grad():
        theirs = -ref.predict_feature_maps(h.double()[:, :, None, None]).double().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    w, b = (t.numpy() for t in linear_map(ctx, "ash"))
    shaped = _ash_float64(h.double().numpy(), percentile, variant)
    np.testing.assert_allclose(ours, logsumexp(shaped @ w.T + b, axis=1), rtol=1e-9, atol=1e-9)
    others = {v: _ours("ash", ctx, out, percentile=percentile, variant=v) for v in "spb" if v != variant}
    assert all(not np.allclose(ours, other) for other in others.values())  # the variants differ


def test_tune_grids_are_openoods_sweeps() -> None:
    """configs/postprocessors/*.yml of Jingkang50/OpenOOD (the v1.5 tag; gen.yml, added after it)."""
    openood = {"energy": {"temperature": [1, 10, 100, 1000]}, "odin": {"temperature": [1, 10, 100, 1000],
               "eps": [0.0014, 0.0028]}, "gen": {"gamma": [0.01, 0.1, 0.5, 1, 2, 5, 10],
               "m": [10, 50, 100, 200, 500, 1000]}, "knn": {"k": [50, 100, 200, 500, 1000]},
               "vim": {"dim": [256, 1000]}, "react": {"percentile": [85, 90, 95, 99]},
               "ash": {"percentile": [65, 70, 75, 80, 85, 90, 95]}}
    for name, cls in DETECTORS.items():
        assert {k: list(v) for k, v in cls.tune_grid.items()} == openood.get(name, {}), name


def test_gen_matches_pytorch_ood_and_openood(field) -> None:
    model, ctx, out = field
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(50, K, generator=gen)  # moderate: no probability inside pytorch-ood's clamp
    moderate = SplitOutputs(torch.cat([logits, torch.zeros(50, 1)], 1) if model.abstain else logits,
                            torch.zeros(50, 1), torch.zeros(50).long())
    expected = -K * GEN.score(logits.double(), gamma=0.1).numpy()  # mean -> sum, OOD -> ID sign
    np.testing.assert_allclose(_ours("gen", ctx, moderate), expected, rtol=1e-9)
    # OpenOOD's formula in float64 on confident logits, top M = 3 of the K, with 1 - p of the top
    # class as the sum of the others (1 - p itself rounds to 0, or loses digits, in float64).
    confident = SplitOutputs(torch.cat([logits * 40, torch.zeros(50, 1)], 1) if model.abstain else logits * 40,
                             torch.zeros(50, 1), torch.zeros(50).long())
    p = np.sort(torch.softmax(confident.logits[:, :K].double(), 1).numpy(), axis=1)[:, ::-1]
    q = 1 - p
    q[:, 0] = p[:, 1:].sum(axis=1)
    exact = -np.sum(p[:, :3] ** 0.5 * q[:, :3] ** 0.5, axis=1)
    ours = _ours("gen", ctx, confident, gamma=0.5, m=3)
    np.testing.assert_allclose(ours, exact, rtol=1e-9, atol=0)
    naive = -np.sum(p[:, :3] ** 0.5 * (1 - p[:, :3]) ** 0.5, axis=1)  # what GEN computed before
    assert not np.allclose(naive, exact, rtol=1e-6, atol=0) and np.unique(ours).size == len(ours)


@pytest.fixture
def float64_default():
    """pytorch-ood allocates its means with the default dtype: fit it in float64, as ours."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_mds_matches_pytorch_ood(field, float64_default) -> None:
    _, ctx, out = field
    live = slice(3, None)  # pytorch-ood inverts (1e-6 ridge); ours pinv: equal on the live units
    ref = Mahalanobis(encoder=None).fit_features(ctx.train.penultimate[:, live].double(), ctx.train.labels)
    theirs = ref.predict_features(out.penultimate[:, live].double()).numpy()
    n = len(ctx.train.labels)
    np.testing.assert_allclose(_ours("mds", ctx, out), -2 * n * theirs, rtol=1e-6)


def test_rmds_matches_pytorch_ood(field, float64_default) -> None:
    _, ctx, out = field
    live = slice(3, None)
    ref = RMD(encoder=None).fit_features(ctx.train.penultimate[:, live].double(), ctx.train.labels)
    theirs = ref.predict_features(out.penultimate[:, live].double()).numpy()
    n = len(ctx.train.labels)
    ours = _ours("rmds", ctx, out)
    np.testing.assert_allclose(ours, -n * theirs, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ours, _ours("mds", ctx, out))


def test_forward_pass_keeps_the_backbone_features() -> None:
    model = build_model("test_resnet", "halo", num_classes=K, in_chans=1, seed=0).eval()
    x = torch.randn(10, 1, 8, 8)
    out = forward_pass(model, torch.utils.data.TensorDataset(x, torch.zeros(10).long()), torch.device("cpu"),
                       batch_size=4, show_progress=False)
    with torch.no_grad():
        h = model.backbone(x)
        np.testing.assert_allclose(out.penultimate.numpy(), h.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.logits.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert out.penultimate.shape == (10, model.embed.in_features)


def test_detector_settings_parse_validate_and_label() -> None:
    assert parse_detector_spec("odin:temperature=1000:eps=0.0014") == ("odin", {"temperature": 1000.0,
                                                                              "eps": 0.0014})
    assert parse_detector_spec("ash:percentile=80:variant=b") == ("ash", {"percentile": 80.0, "variant": "b"})
    dets = detectors_for(["knn:k=100", "knn", "odin:temperature=1000:eps=0.0014", "knn:k=100", "ash:variant=b",
                          "ash:variant=s", "ash:percentile=80:variant=p"], abstain=False)
    assert [d.label for d in dets] == ["knn[k=100]", "knn", "odin", "ash[variant=b]", "ash",
                                       "ash[percentile=80,variant=p]"]  # defaults keep the plain name
    assert dets[0].params["k"] == 100 and dets[0].settings()["params"] == {"k": 100.0}
    assert dets[3].settings()["params"] == {"percentile": 90.0, "variant": "b"}
    for bad, match in [("knn:k=0", "integer >= 1"), ("knn:k=2.5", "integer >= 1"), ("react:percentile=100", "percentile"),
                       ("odin:temperature=-1", "> 0"), ("gen:gamma=nan", "> 0|finite"), ("knn:k", "NAME:PARAM=VALUE"),
                       ("knn:k=ten", "not a number"), ("knn:kk=3", "no parameter"), ("knn:k=1:k=2", "twice"),
                       ("knnn", "Did you mean 'knn'"), ("ash:variant=x", "variant must be one of s, p, b, got 'x'"),
                       ("ash:variant=1", "variant must be one of s, p, b, got '1'"), ("ash:variant=", "one of s, p, b")]:
        with pytest.raises(HaloBenchError, match=match):
            detectors_for([bad], abstain=False)
    assert {"knn", "vim", "react", "ash", "gen", "mds", "rmds"} <= {d.name for d in detectors_for(None, False)}
