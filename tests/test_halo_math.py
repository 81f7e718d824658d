"""HALO head and loss against float64 formulas written out here (docs/method.md section 7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from halo_bench import HALOHead, LinearHead
from halo_bench.losses.halo_head import halo_init, radial_nll


def _ref_init(k: int, d: int, ls: float) -> tuple[float, float]:
    """gamma_0 and b written from docs/method.md section 3, independently of the module."""
    r2_target = 1 - 2 / d
    gamma0 = 20 / (2.0 - r2_target)
    p_max, p_min = (1 - ls + ls / k, ls / k) if ls > 0 else (0.99, 0.01 / k)
    return gamma0, gamma0 * (1 - r2_target) - math.log(p_max / p_min)


def _head(k: int, d: int, seed: int, **kwargs) -> HALOHead:
    torch.manual_seed(seed)
    head = HALOHead(in_features=d, num_classes=k, **kwargs)
    with torch.no_grad():  # move the centroids away from zero-mean so centring matters
        head.centroids.add_(torch.randn(d))
        head.gamma_raw.add_(torch.randn(()) * 0.3)
    return head


@pytest.mark.parametrize("k,d,ls", [(6, 6, 0.1), (10, 10, 0.0), (100, 64, 0.2), (3, 512, 0.05)])
def test_init_matches_closed_form(k: int, d: int, ls: float) -> None:
    gamma0, bias = _ref_init(k, d, ls)
    head = HALOHead(in_features=d, num_classes=k, label_smoothing=ls)
    assert float(head.gamma.detach()) == pytest.approx(gamma0, rel=1e-6)
    assert float(head.abstain_bias) == pytest.approx(bias, rel=1e-6, abs=1e-6)
    assert halo_init(k, d, ls).gamma0 == pytest.approx(gamma0)


def test_gamma0_is_15_for_six_classes() -> None:
    assert halo_init(6, 6, 0.1).gamma0 == pytest.approx(15.0)


def test_large_gamma_uses_identity_softplus_inverse() -> None:
    from halo_bench.losses.halo_head import inverse_softplus

    assert inverse_softplus(25.0) == 25.0
    assert F.softplus(torch.tensor(inverse_softplus(7.5), dtype=torch.float64)).item() == pytest.approx(7.5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k,d", [(6, 6), (10, 32)])
def test_distance_logits_match_direct_float64(seed: int, k: int, d: int) -> None:
    head = _head(k, d, seed)
    x = torch.randn(17, d) * 1.5
    c = head.centroids.detach().double()
    c = c - c.mean(0)
    gamma = F.softplus(head.gamma_raw.detach().double())
    expected = -gamma * ((x.double()[:, None] - c[None]) ** 2).sum(-1) / d
    torch.testing.assert_close(head.distance_logits(x).double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(head.squared_distances(x).double(), -expected / gamma, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_shift_invariance_and_relative_logits(seed: int) -> None:
    k, d = 6, 8
    head = _head(k, d, seed)
    x = torch.randn(11, d).double()
    head = head.double()
    gamma = head.gamma.detach()
    s = head.shifted_logits(x).detach().double()
    t = head.distance_logits(x).detach().double()
    b = head.abstain_bias.double()
    x_sq = (x**2).mean(1, keepdim=True)
    train_softmax = torch.cat([s, b.expand(11, 1)], 1).softmax(1)
    true_softmax = torch.cat([t, b - gamma * x_sq], 1).softmax(1)
    torch.testing.assert_close(train_softmax, true_softmax, rtol=1e-5, atol=1e-6)
    logits = head(x).detach()
    assert logits.shape == (11, k + 1)
    assert torch.all(logits[:, -1] == 0)
    torch.testing.assert_close(logits.softmax(1).double(), train_softmax, rtol=1e-5, atol=1e-6)


def test_float64_head_computes_in_float64() -> None:
    head = _head(6, 9, 0).double()
    x = torch.randn(13, 9, dtype=torch.float64)
    c = head.centroids.detach() - head.centroids.detach().mean(0)
    expected = -head.gamma.detach() * ((x[:, None] - c[None]) ** 2).sum(-1) / 9
    assert head.distance_logits(x).dtype == torch.float64
    torch.testing.assert_close(head.distance_logits(x), expected, rtol=1e-12, atol=1e-11)


def test_radial_minimum_is_at_one_minus_two_over_d() -> None:
    for d in (3, 6, 10, 128):
        r2 = torch.linspace(0.01, 3.0, 300001, dtype=torch.float64)
        best = r2[radial_nll(r2, d).argmin()].item()
        assert best == pytest.approx(1 - 2 / d, abs=2e-5)


def test_centroids_are_centred() -> None:
    head = _head(7, 9, 0)
    centred = head.centred_centroids()
    assert centred.sum(0).abs().max().item() < 1e-5
    assert head.centroids.detach().sum(0).abs().max().item() > 1e-3  # raw ones are not


def _ref_loss(head: HALOHead, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """docs/method.md sections 2, 4, 5 in float64, with distances computed directly."""
    x = x.double()
    k, d = head.num_classes, head.in_features
    ls = head.label_smoothing
    c = head.centroids.detach().double()
    c = c - c.mean(0)
    gamma = F.softplus(head.gamma_raw.detach().double())
    b = head.abstain_bias.double()
    dist = ((x[:, None] - c[None]) ** 2).sum(-1) / d
    t = -gamma * dist
    x_sq = (x**2).mean(1, keepdim=True)
    s = t + gamma * x_sq
    logits = torch.cat([s, b.expand(len(x), 1)], 1)
    onehot = F.one_hot(y, k).double()
    if head.distill:
        z = torch.where(onehot.bool(), torch.zeros_like(t), t / ls)
        target = z.softmax(1)
    else:
        target = onehot * (1 - ls) + ls / k
    target = torch.cat([target, torch.zeros(len(x), 1, dtype=torch.float64)], 1)
    ce = -(target * logits.log_softmax(1)).sum(1)
    r2 = dist[torch.arange(len(x)), y]
    radial = -((0.5 - 1 / d) * torch.log(r2) - r2 / 2)
    return (ce + radial).mean()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("distill", [True, False])
def test_loss_matches_float64_reference(seed: int, distill: bool) -> None:
    head = _head(5, 12, seed, distill=distill, label_smoothing=0.15)
    x = torch.randn(23, 12)
    y = torch.randint(0, 5, (23,))
    assert head.loss(x, y).item() == pytest.approx(_ref_loss(head, x, y).item(), rel=1e-4)


def test_distill_target_gives_true_class_the_largest_share() -> None:
    from halo_bench.losses.halo_head import halo_targets

    t = -torch.rand(50, 6) * 10
    y = torch.randint(0, 6, (50,))
    target = halo_targets(t, y, 0.1, distill=True)
    assert torch.all(target[:, -1] == 0)
    torch.testing.assert_close(target.sum(1), torch.ones(50))
    assert torch.all(target.argmax(1) == y)


def test_reduction_options() -> None:
    head = _head(4, 6, 0)
    x, y = torch.randn(9, 6), torch.randint(0, 4, (9,))
    per = head.loss(x, y, reduction="none")
    assert per.shape == (9,)
    assert head.loss(x, y, reduction="sum").item() == pytest.approx(per.sum().item(), rel=1e-5)
    with pytest.raises(ValueError):
        head.loss(x, y, reduction="median")


def _grads(head: HALOHead, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    head.zero_grad()
    head.loss(x, y).backward()
    return [x.grad, head.centroids.grad, head.gamma_raw.grad]


def test_gradients_finite_at_origin_and_on_a_centroid() -> None:
    head = _head(6, 6, 0)
    y = torch.tensor([0, 1, 2])
    for x in (torch.zeros(3, 6), head.centred_centroids().detach()[y]):
        for g in _grads(head, x, y):
            assert g is not None and torch.isfinite(g).all()


def test_bf16_autocast_keeps_head_in_float32() -> None:
    head = _head(6, 6, 1)
    x = torch.randn(8, 6)
    y = torch.randint(0, 6, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x.bfloat16())
        loss = head.loss(x.bfloat16(), y)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(head.loss(x.bfloat16().float(), y).item(), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads = _grads(head, x, y)
    assert all(torch.isfinite(g).all() for g in grads)


def test_frozen_gamma_gets_no_gradient() -> None:
    head = HALOHead(in_features=6, num_classes=6, learn_gamma=False)
    head.loss(torch.randn(4, 6), torch.tensor([0, 1, 2, 3])).backward()
    assert head.gamma_raw.grad is None and not head.gamma_raw.requires_grad


def test_linear_head_is_cross_entropy() -> None:
    torch.manual_seed(0)
    head = LinearHead(in_features=8, num_classes=5)
    x, y = torch.randn(10, 8), torch.randint(0, 5, (10,))
    assert head(x).shape == (10, 5)
    expected = F.cross_entropy(head.fc(x).double(), y)
    assert head.loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_head_rejects_degenerate_sizes() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        HALOHead(in_features=6, num_classes=1)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        HALOHead(in_features=2, num_classes=4)
