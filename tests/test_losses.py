"""The loss registry: each loss against an independent float64 formula, knob validation,
and a loss added from outside the package going through train -> eval -> report."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from clirun import cli_ok as _ok

from halo_bench.core.errors import HaloBenchError
from halo_bench.losses import (
    LOSSES,
    LinearHead,
    LogitNormHead,
    LossSpec,
    get_loss,
    parse_loss,
    register_loss,
)


def _ref_smoothed_ce(logits: torch.Tensor, y: torch.Tensor, ls: float) -> torch.Tensor:
    """Label-smoothed cross-entropy written out in float64: target 1-ls+ls/K on y, ls/K elsewhere."""
    n, k = logits.shape
    logp = logits.double() - torch.logsumexp(logits.double(), dim=1, keepdim=True)
    target = torch.full((n, k), ls / k, dtype=torch.float64)
    target[torch.arange(n), y] += 1.0 - ls
    return -(target * logp).sum(dim=1).mean()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ls", [0.0, 0.1, 0.3])
def test_cce_with_label_smoothing_matches_float64(seed: int, ls: float) -> None:
    torch.manual_seed(seed)
    head = LinearHead(in_features=7, num_classes=5, label_smoothing=ls).double()
    x, y = torch.randn(33, 7, dtype=torch.float64) * 3, torch.randint(0, 5, (33,))
    expected = _ref_smoothed_ce(head.fc(x), y, ls)
    assert head.loss(x, y).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tau", [0.04, 0.5, 1.0])
def test_logitnorm_matches_float64(seed: int, tau: float) -> None:
    torch.manual_seed(seed)
    head = LogitNormHead(in_features=6, num_classes=4, tau=tau).double()
    x, y = torch.randn(29, 6, dtype=torch.float64) * 2, torch.randint(0, 4, (29,))
    f = (x @ head.fc.weight.T + head.fc.bias).tolist()
    total = 0.0
    for row, label in zip(f, y.tolist(), strict=True):  # one sample at a time, plain Python floats
        norm = math.sqrt(sum(v * v for v in row)) + 1e-7
        z = [v / (tau * norm) for v in row]
        top = max(z)
        total += -(z[label] - top - math.log(sum(math.exp(v - top) for v in z)))
    assert head.loss(x, y).item() == pytest.approx(total / len(f), rel=1e-10)
    # Evaluation reads the raw logits, not the normalised ones.
    assert torch.allclose(head(x), torch.tensor(f, dtype=torch.float64))


def test_logitnorm_loss_is_invariant_to_the_logit_scale() -> None:
    torch.manual_seed(0)
    head = LogitNormHead(in_features=5, num_classes=3).double()
    x, y = torch.randn(10, 5, dtype=torch.float64), torch.randint(0, 3, (10,))
    before = head.loss(x, y)
    with torch.no_grad():
        head.fc.weight.mul_(7.0)
        head.fc.bias.mul_(7.0)
    assert torch.allclose(head.loss(x, y), before, atol=1e-9)  # ||f|| can't buy a lower loss


def test_every_builtin_loss_declares_head_knobs_and_label() -> None:
    assert {"cce", "logitnorm", "halo"} <= set(LOSSES)
    for spec in LOSSES.values():
        head = spec.head_class()(in_features=6, num_classes=4, **spec.defaults())
        assert head(torch.randn(3, 6)).shape[0] == 3
        assert head.config()["num_classes"] == 4 and isinstance(head.diagnostics(), dict)
        assert all(f.metadata.get("help") for f in dataclasses.fields(spec.knobs)), spec.name
    assert get_loss("cce").defaults() == {"label_smoothing": 0.0}
    assert get_loss("halo").defaults() == {"label_smoothing": 0.1, "distill": True, "learn_gamma": True}


def test_parse_loss_and_knob_validation() -> None:
    spec, knobs = parse_loss("cce:label_smoothing=0.1")
    assert spec.name == "cce" and knobs == {"label_smoothing": 0.1}
    assert spec.tag(spec.make_knobs(knobs).__dict__) == "cce+ls0.1"
    assert spec.display({"label_smoothing": 0.1}) == "CCE label_smoothing=0.1"
    assert parse_loss("halo:distill=false")[1] == {"distill": False}
    for text, message in [("focal", "unknown loss 'focal'"), ("cce:tau=1", "has no knob"),
                          ("cce:label_smoothing=1.5", "must lie in"), ("logitnorm:tau=nan", "must be finite"),
                          ("logitnorm:tau=0", "tau must be positive"), ("halo:distill=maybe", "true or false"),
                          ("cce:label_smoothing", "name:knob=value")]:
        with pytest.raises(HaloBenchError, match=message):
            parse_loss(text)


# ----------------------------------------------- a loss from outside the package


@dataclasses.dataclass(frozen=True)
class BrierKnobs:
    scale: float = dataclasses.field(default=1.0, metadata={"help": "multiplies the squared error"})


class BrierHead(LinearHead):
    """Toy loss for the test: the Brier score of the softmax, on a linear head."""

    kind = "toy_brier"

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0) -> None:
        super().__init__(in_features, num_classes)
        self.scale = scale

    def loss(self, x, y, reduction=None):
        probs = self.training_logits(x).softmax(dim=1)
        return self.scale * (probs - F.one_hot(y, self.num_classes)).pow(2).sum(dim=1).mean()

    def knobs(self):
        return {"scale": self.scale}


@pytest.fixture
def toy_loss():
    spec = register_loss(LossSpec(name="toy_brier", label="Brier", summary="test-only Brier loss",
                                  knobs=BrierKnobs, head=BrierHead))
    yield spec
    del LOSSES[spec.name]


def test_a_registered_loss_trains_evaluates_and_reports_through_the_cli(toy_loss, tmp_path: Path) -> None:
    out = str(tmp_path)
    for loss in ("cce", "toy_brier:scale=2"):
        _ok("train", "test_resnet", "--loss", loss, "--epochs", "1", "--out", out)
    run = tmp_path / "digits-test_resnet-toy_brier+scale2-s0"
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == {"name": "toy_brier", "label": "Brier scale=2", "tag": "toy_brier+scale2",
                              "knobs": {"scale": 2.0}, "changed": {"scale": 2.0}}
    assert config["model"]["head"]["scale"] == 2.0
    for folder in ("digits-test_resnet-cce-s0", run.name):
        _ok("eval", str(tmp_path / folder), "--detectors", "msp,energy")
    report = _ok("report", "--runs", out)
    assert "Brier scale=2" in report and "Δ Brier scale=2−CCE" in report
    csv = _ok("report", "--runs", out, "--format", "csv")
    assert "toy_brier+scale2" in csv


def test_bench_runs_a_label_smoothing_control_beside_cce(tmp_path: Path) -> None:
    output = _ok("bench", "--model", "test_resnet", "--seeds", "0", "--epochs", "1", "--detectors", "msp",
                 "--losses", "cce,cce:label_smoothing=0.1", "--out", str(tmp_path))
    assert "CCE label_smoothing=0.1" in output and "Δ CCE label_smoothing=0.1−CCE" in output
    assert (tmp_path / "digits-test_resnet-cce+ls0.1-s0" / "results-det-msp.json").is_file()
    assert (tmp_path / "report-digits-test_resnet-cce_cce+ls0.1-s0.md").is_file()
