"""Training: resume after an interruption, divergence handling, run-directory contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from halo_bench.core.errors import HaloBenchError
from halo_bench.models.checkpoint import read_checkpoint
from halo_bench.train.loop import TrainConfig, train
from halo_bench.train.step import TrainingDiverged

TINY = "test_resnet"


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("pipeline", ["loader", "device"])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, registry, pipeline: str) -> None:
    straight = train(TrainConfig(model=TINY, loss="halo", epochs=3, out=str(tmp_path / "a"),
                                 data_pipeline=pipeline), registry)

    def stop_after_first(epoch: int) -> None:
        if epoch == 1:
            raise _Interrupt

    cfg = TrainConfig(model=TINY, loss="halo", epochs=3, out=str(tmp_path / "b"), data_pipeline=pipeline)
    with pytest.raises(_Interrupt):
        train(cfg, registry, on_epoch_end=stop_after_first)
    state = read_checkpoint(tmp_path / "b" / cfg.run_name / "ckpt.pt")
    assert state["meta"]["epochs_done"] == 1 and not state["meta"]["complete"]
    resumed = train(cfg, registry)
    assert resumed.epochs_run == 2
    a = read_checkpoint(straight.checkpoint)["model"]
    b = read_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert json.loads((resumed.run_dir / "config.json").read_text())["data_pipeline"] == pipeline


def test_run_directory_records_config_versions_and_metrics(tiny_runs) -> None:
    run_dir = tiny_runs["halo"].parent
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train_config"]["seed"] == 0 and config["train_config"]["lr"] == 0.05
    assert config["model"]["head"]["type"] == "halo" and config["model"]["embed_dim"] == 6
    assert {"torch", "timm", "python", "halo-bench"} <= set(config["versions"])
    assert config["data_config"]["input_size"] == [1, 8, 8]
    meta = read_checkpoint(tiny_runs["halo"])["meta"]
    assert meta["complete"] and read_checkpoint(tiny_runs["halo"])["train_state"] is None
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_complete_run_is_skipped_and_a_different_config_is_refused(tiny_runs, registry) -> None:
    out = str(tiny_runs["cce"].parent.parent)
    again = train(TrainConfig(model=TINY, loss="cce", epochs=2, out=out), registry)
    assert again.skipped
    with pytest.raises(HaloBenchError, match="different configuration.*--force"):
        train(TrainConfig(model=TINY, loss="cce", epochs=2, lr=0.3, out=out), registry)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path: Path, registry,
                                                                         monkeypatch) -> None:
    from halo_bench.losses import linear as heads

    cfg = TrainConfig(model=TINY, loss="cce", epochs=3, out=str(tmp_path))
    original = heads.LinearHead.loss
    calls = {"n": 0}
    from halo_bench.data import load_split

    steps_per_epoch = len(load_split(registry.dataset("digits"), "train", registry.suite("digits").data_config)) // 64

    def poisoned(self, x, y, reduction=None):
        calls["n"] += 1
        loss = original(self, x, y, reduction)
        return loss * float("nan") if calls["n"] > steps_per_epoch + 3 else loss

    monkeypatch.setattr(heads.LinearHead, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="diverged at epoch 2, step 4 .*last good checkpoint \\(epoch 1\\)"):
        train(cfg, registry)
    state = read_checkpoint(tmp_path / cfg.run_name / "ckpt.pt")
    assert state["meta"]["epochs_done"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_halo_recipe_is_stable_on_the_embedded_suite(tiny_runs) -> None:
    meta = read_checkpoint(tiny_runs["halo"])["meta"]
    assert meta["final"]["gamma"] > 1.0  # the temperature did not collapse
    assert meta["final"]["test_acc"] > 50.0


@pytest.mark.parametrize("loss", ["cce", "logitnorm", "halo"])
def test_train_step_under_bf16_autocast_follows_the_float32_step(loss: str) -> None:
    """The CUDA path (bf16 autocast) exercised on the CPU: every head trains under it, and the
    bf16 step moves the weights the way the float32 step does.

    32x32 inputs: at 8x8, test_resnet's later stages collapse to 1x1 maps (pooling shortcuts,
    BatchNorm over 16 values), a degenerate path for bf16 kernels that says nothing about
    the model a GPU user trains (see CHANGELOG).
    """
    from halo_bench.models.classifier import build_model
    from halo_bench.train.setup import param_groups
    from halo_bench.train.step import TrainForward, train_step

    gen = torch.Generator().manual_seed(1234)
    x, y = torch.randn(16, 1, 32, 32, generator=gen), torch.randint(0, 6, (16,), generator=gen)
    updates = {}
    for dtype in (None, torch.bfloat16):
        model = build_model(TINY, loss, num_classes=6, in_chans=1, seed=0)
        optimizer = torch.optim.SGD(param_groups(model, 0.0), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        before = model.embed.weight.detach().clone()
        outcome = train_step(TrainForward(model, model.backbone), x, y, optimizer, scaler, None, dtype)
        assert bool(outcome.finite) and torch.isfinite(outcome.loss) and 0 <= int(outcome.correct) <= 16
        updates[dtype] = (model.embed.weight.detach() - before).flatten()
    cosine = torch.nn.functional.cosine_similarity(updates[None], updates[torch.bfloat16], dim=0)
    assert updates[None].norm() > 0 and cosine > 0.9, float(cosine)


def test_non_finite_gradient_is_noted_on_the_device_and_reported_at_the_check() -> None:
    from halo_bench.models.classifier import build_model
    from halo_bench.train.setup import param_groups
    from halo_bench.train.step import DivergenceWatch, TrainForward, train_step

    model = build_model(TINY, "cce", num_classes=6, in_chans=1, seed=0)
    optimizer = torch.optim.SGD(param_groups(model, 0.0), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    forward, watch = TrainForward(model, model.backbone), DivergenceWatch(torch.device("cpu"), every=10)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 6, (8,))
    for _ in range(2):  # two good steps
        watch.observe(train_step(forward, x, y, optimizer, scaler, 5.0, None))
    assert watch.problem(scaler) is None
    model.embed.weight.register_hook(lambda grad: grad * float("inf"))  # finite loss, infinite gradient
    outcome = train_step(forward, x, y, optimizer, scaler, 5.0, None)
    assert torch.isfinite(outcome.loss) and not bool(outcome.finite)
    watch.observe(outcome)
    watch.observe(train_step(forward, x, y, optimizer, scaler, 5.0, None))  # later bad steps: the first is kept
    step, message = watch.problem(scaler)
    assert step == 2 and "gradient norm = inf" in message and f"loss = {float(outcome.loss)}" in message


@pytest.mark.parametrize("every", [3, 1000])
def test_the_host_reads_the_divergence_flag_every_n_steps_and_at_the_epoch_end(tmp_path: Path, registry,
                                                                               monkeypatch, every: int) -> None:
    """The steady-state loop never waits for the device: one host read per `every` steps."""
    from halo_bench.train import loop as train_module
    from halo_bench.train import step as step_module

    reads = {"n": 0}
    original = train_module.DivergenceWatch.problem

    def counted(self, scaler):
        reads["n"] += 1
        return original(self, scaler)

    monkeypatch.setattr(step_module, "CHECK_EVERY", every)
    monkeypatch.setattr(train_module.DivergenceWatch, "problem", counted)
    result = train(TrainConfig(model=TINY, loss="cce", epochs=1, out=str(tmp_path)), registry)
    steps = json.loads((result.run_dir / "config.json").read_text())["steps_per_epoch"]
    assert steps > 3 and reads["n"] == steps // every + 1


def test_bad_recipe_values_are_refused(registry, tmp_path: Path) -> None:
    for kwargs, message in [({"epochs": 0}, "--epochs"), ({"batch_size": 0}, "--batch-size"),
                            ({"lr": -1.0}, "--lr"), ({"loss_knobs": {"label_smoothing": 1.0}}, "label_smoothing must lie"),
                            ({"lr": float("nan")}, "--lr must be a finite"), ({"seed": -1}, "--seed"),
                            ({"embed_dim": 0}, "--embed-dim")]:
        with pytest.raises(HaloBenchError, match=message):
            train(TrainConfig(model=TINY, out=str(tmp_path), **kwargs), registry)
    with pytest.raises(HaloBenchError, match="at least 3 dimensions.*--embed-dim"):
        train(TrainConfig(model=TINY, embed_dim=2, out=str(tmp_path)), registry)
    with pytest.raises(HaloBenchError, match="cannot take inputs of size \\(1, 8, 8\\)"):
        train(TrainConfig(model="test_vit", out=str(tmp_path)), registry)
    assert not any(tmp_path.iterdir())  # nothing written for a run that cannot start


def test_labels_outside_the_classes_are_refused(tmp_path: Path) -> None:
    import yaml

    from halo_bench.data import load_registry
    from halo_bench.data.registry import DEFAULT_REGISTRY

    doc = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    doc["datasets"]["digits"]["params"]["classes"] = [0, 1, 2, 3, 4, 5, 6]  # data has 7 classes, names 6
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HaloBenchError, match="labels 0..6, but its registry entry names 6 classes"):
        train(TrainConfig(model=TINY, epochs=1, out=str(tmp_path)), load_registry(path))


def test_collapsing_fp16_loss_scale_counts_as_divergence() -> None:
    from halo_bench.models.classifier import build_model
    from halo_bench.train.setup import param_groups
    from halo_bench.train.step import (
        MIN_LOSS_SCALE,
        DivergenceWatch,
        TrainForward,
        train_step,
    )

    model = build_model(TINY, "cce", num_classes=6, in_chans=1, seed=0)
    optimizer = torch.optim.SGD(param_groups(model, 0.0), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=MIN_LOSS_SCALE * 4)  # enabled, as fp16 on a GPU
    model.embed.weight.register_hook(lambda grad: grad * float("nan"))  # every step non-finite
    forward, watch = TrainForward(model, model.backbone), DivergenceWatch(torch.device("cpu"))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 6, (8,))
    before = model.embed.weight.detach().clone()
    watch.observe(train_step(forward, x, y, optimizer, scaler, 5.0, None))  # skipped, scale halves
    assert watch.problem(scaler) is None and torch.equal(model.embed.weight, before)
    for _ in range(3):
        watch.observe(train_step(forward, x, y, optimizer, scaler, 5.0, None))
    problem = watch.problem(scaler)
    assert problem is not None and "loss scale fell" in problem[1]
    assert torch.equal(model.embed.weight, before)  # the scaler skipped every step


def test_fp16_scaler_skips_a_non_finite_loss_without_calling_it_divergence() -> None:
    """fp16 (GPUs without bf16): an overflowing step is the GradScaler's to skip, on the CPU here."""
    from halo_bench.models.classifier import build_model
    from halo_bench.train.setup import param_groups
    from halo_bench.train.step import DivergenceWatch, TrainForward, train_step

    model = build_model(TINY, "cce", num_classes=6, in_chans=1, seed=0)
    optimizer = torch.optim.SGD(param_groups(model, 0.0), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    forward, watch = TrainForward(model, model.backbone), DivergenceWatch(torch.device("cpu"))

    class Overflow(TrainForward):  # the same step, its loss overflowed
        def forward(self, x, y):
            loss, z = super().forward(x, y)
            return loss * float("inf"), z

    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 6, (8,))
    before, scale = model.embed.weight.detach().clone(), scaler.get_scale()
    outcome = train_step(Overflow(model, model.backbone), x, y, optimizer, scaler, 5.0, None)
    assert torch.isinf(outcome.loss) and not bool(outcome.finite)  # what happened, as it happened
    watch.observe(outcome)
    assert watch.problem(scaler) is None  # ... is not a divergence:
    assert torch.equal(model.embed.weight, before) and scaler.get_scale() == scale / 2  # the scaler skipped it
    watch.observe(train_step(forward, x, y, optimizer, scaler, 5.0, None))
    assert watch.problem(scaler) is None and not torch.equal(model.embed.weight, before)


def test_an_fp16_epoch_with_an_overflowing_step_trains_on(tmp_path: Path, registry, monkeypatch) -> None:
    from halo_bench.losses import linear as heads
    from halo_bench.train import loop as train_module

    made = []
    original_opt, original_loss = train_module.make_optimisation, heads.LinearHead.loss

    def fp16_scaler(cfg, setup):  # as on a GPU without bf16
        opt = original_opt(cfg, setup)
        opt.scaler = torch.amp.GradScaler("cpu", enabled=True)
        made.append(opt)
        return opt

    calls = {"n": 0}

    def overflow_once(self, x, y, reduction=None):
        calls["n"] += 1
        loss = original_loss(self, x, y, reduction)
        return loss * float("inf") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "make_optimisation", fp16_scaler)
    monkeypatch.setattr(heads.LinearHead, "loss", overflow_once)
    result = train(TrainConfig(model=TINY, loss="cce", epochs=1, out=str(tmp_path)), registry)
    (row,) = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert calls["n"] > 3 and made[0].scaler.get_scale() == 2.0**15  # one skipped step: 2**16 halved once
    assert 0 < row["loss"] < 10  # the mean over the steps whose loss was finite


def test_a_checkpoint_of_an_8_gpu_job_resumes_in_a_1_gpu_job(tmp_path: Path, monkeypatch) -> None:
    """A requeue on fewer GPUs: each process sets its own GPU's generator, and no GPU it cannot see."""
    from types import SimpleNamespace

    from halo_bench.train import loop as train_module

    gpus = {"count": 8}
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]  # GPU i's generator state
    restored: list[tuple[int, torch.Tensor]] = []

    def index(device) -> int:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        if device.index is not None and device.index >= gpus["count"]:
            raise IndexError("tuple index out of range")  # torch.cuda.default_generators[index]
        return 0 if device.index is None else device.index

    def set_rng_state(state, device="cuda") -> None:
        restored.append((index(device), state.clone()))

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus["count"])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for module in (torch.cuda, torch.cuda.random):  # set_rng_state_all calls random's own
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
        monkeypatch.setattr(module, "get_rng_state", lambda device="cuda": states[index(device)])
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [states[i] for i in range(gpus["count"])])

    def job(device: torch.device) -> tuple[SimpleNamespace, SimpleNamespace]:
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        opt = SimpleNamespace(optimizer=optimizer, scheduler=scheduler, scaler=torch.amp.GradScaler("cpu", enabled=False))
        return SimpleNamespace(model=model, loader_gen=torch.Generator(), device=device), opt

    ckpt = tmp_path / "ckpt.pt"
    setup, opt = job(torch.device("cuda", 0))  # rank 0 of an 8-GPU torchrun job writes the checkpoint
    train_module.record_epoch(SimpleNamespace(epochs=3), setup, opt, {"device": "cuda:0"}, [{"epoch": 1}], ckpt)
    state = read_checkpoint(ckpt)
    gpus["count"] = 1  # requeued with one GPU
    setup, opt = job(torch.device("cuda"))
    assert train_module.restore(state, setup, opt)[0] == 1
    assert len(restored) == 1 and restored[0][0] == 0 and torch.equal(restored[0][1], states[0])
    # A checkpoint written before: every visible GPU's state; the writer's own (cuda:3) is the one set.
    restored.clear()
    state["train_state"]["cuda_rng"], state["meta"]["device"] = states[:4], "cuda:3"
    train_module.restore(state, setup, opt)
    assert len(restored) == 1 and restored[0][0] == 0 and torch.equal(restored[0][1], states[3])


class _HostReads:
    """While `armed`, reading a tensor's value on the host fails the test.

    A GPU run has torch.cuda.set_sync_debug_mode("error") for this; on the CPU every value is
    at hand, so the guard is twofold: the Python conversions (item, bool, float, int, index,
    tolist, numpy, cpu) and, under them, the dispatcher's ops that copy a value out to the host
    (`_local_scalar_dense`, run by .item() and bool()) or size their output by the data (nonzero,
    masked_select, unique, indexing by a boolean mask): each a device sync on a GPU.
    """

    CONVERSIONS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu")

    def __init__(self, monkeypatch) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        self.armed = False
        ops = torch.ops.aten
        syncing = {ops._local_scalar_dense, ops.nonzero, ops.masked_select, ops._unique2, ops.unique_consecutive,
                   ops.unique_dim}
        indexing = {ops.index, ops.index_put, ops.index_put_, ops._index_put_impl_}
        guard = self

        def by_mask(args) -> bool:
            return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                packet = func.overloadpacket
                if guard.armed and (packet in syncing or packet in indexing and by_mask(args)):
                    raise AssertionError(f"host sync in the training loop: aten.{packet.__name__}")
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        for name in self.CONVERSIONS:
            original = getattr(torch.Tensor, name)

            def checked(tensor, *args, _name=name, _original=original, **kwargs):
                if guard.armed:
                    raise AssertionError(f"host sync in the training loop: Tensor.{_name}")
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, checked)
        one_hot = torch.nn.functional.one_hot

        def cuda_one_hot(labels, num_classes=-1):
            # On the CPU one_hot reads the labels' range to check it; on CUDA, given num_classes, it
            # leaves that to scatter's device-side assert and does not sync: allowed as on CUDA.
            armed, guard.armed = guard.armed, guard.armed and num_classes < 1
            try:
                return one_hot(labels, num_classes)
            finally:
                guard.armed = armed

        monkeypatch.setattr(torch.nn.functional, "one_hot", cuda_one_hot)

    def loader(self, loader) -> None:
        """Disarmed while `loader` draws a batch (the DataLoader reads its sampler's indices), armed
        from the moment the loop receives one until it asks for the next."""
        guard = self

        class Guarded(type(loader)):
            def __iter__(self):
                batches = super().__iter__()
                while True:
                    guard.armed = False
                    try:
                        batch = next(batches)
                    except StopIteration:
                        return
                    guard.armed = True
                    yield batch

        loader.__class__ = Guarded


@pytest.mark.parametrize(("pipeline", "loss"), [("loader", "halo"), ("device", "cce")])
def test_the_training_loop_reads_nothing_from_the_device_between_divergence_checks(tmp_path: Path, registry,
                                                                                  monkeypatch, pipeline: str,
                                                                                  loss: str) -> None:
    from halo_bench.train import loop as train_module
    from halo_bench.train import step as step_module

    guard = _HostReads(monkeypatch)
    with guard.mode:  # the guard can fail: each kind of host read, armed
        guard.armed = True
        for read in (lambda t: t.item(), bool, float, lambda t: t.tolist(), lambda t: t.cpu(), torch.nonzero,
                     lambda t: t[t > 0], lambda t: torch.nn.functional.one_hot(t.long())):
            with pytest.raises(AssertionError, match="host sync in the training loop"):
                read(torch.ones(()) if read in (bool, float) else torch.ones(3))
        assert torch.nn.functional.one_hot(torch.ones(3).long(), 4).shape == (3, 4)  # no sync on CUDA
        guard.armed = False
    original_build, original_problem = train_module.build, train_module.DivergenceWatch.problem
    checks = []

    def build(cfg, registry):
        setup = original_build(cfg, registry)
        guard.loader(setup.loader)
        return setup

    def problem(self, scaler):  # the one read allowed: every CHECK_EVERY steps and at the epoch's end
        armed, guard.armed = guard.armed, False
        checks.append(armed)
        try:
            return original_problem(self, scaler)
        finally:
            guard.armed = armed

    monkeypatch.setattr(step_module, "CHECK_EVERY", 3)
    monkeypatch.setattr(train_module, "build", build)
    monkeypatch.setattr(train_module.DivergenceWatch, "problem", problem)
    with guard.mode:
        result = train(TrainConfig(model=TINY, loss=loss, epochs=1, data_pipeline=pipeline, out=str(tmp_path)),
                       registry)
    steps = json.loads((result.run_dir / "config.json").read_text())["steps_per_epoch"]
    assert json.loads((result.run_dir / "config.json").read_text())["data_pipeline"] == pipeline
    assert steps > 3 and checks == [True] * (steps // 3) + [False]  # in the loop, then after it
