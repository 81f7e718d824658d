"""Nothing lost, nothing mixed (docs/integrity.md): re-evaluations never replace other
evaluations, caches and results are keyed by the bytes actually loaded, scores files are
bound to their results, corruption is detected, run folders are locked, full disks and
kills leave earlier files intact."""

from __future__ import annotations

import errno
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from clirun import cli_fails, cli_ok

from halo_bench.core import io as hio
from halo_bench.core.errors import HaloBenchError
from halo_bench.evaluate.run import EvalConfig, evaluate
from halo_bench.features.cache import CACHE_DIR
from halo_bench.models.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from halo_bench.models.classifier import Classifier
from halo_bench.report.render import render
from halo_bench.report.stats import scores_mismatch
from halo_bench.report.tidy import find_results, load_results, tidy
from halo_bench.results import RESULTS_SCHEMA, evaluation_name, results_file


def _copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a tiny run's folder (checkpoint and config.json)."""
    dst.mkdir(parents=True)
    for name in ("ckpt.pt", "config.json"):
        shutil.copy(src.parent / name, dst / name)
    return dst / "ckpt.pt"


def _eval(ckpt: Path, detectors: list[str], **kwargs):
    return evaluate(EvalConfig(checkpoint=str(ckpt), detectors=detectors, device="cpu", ood=["noise"], **kwargs))


# 1. An evaluation with other detectors, sets or limits never replaces another ------------------

def test_re_evaluation_with_other_detectors_is_written_beside(tiny_runs, tmp_path: Path) -> None:
    ckpt = _copy_run(tiny_runs["halo"], tmp_path / "run")
    first, first_path = _eval(ckpt, ["msp", "energy"])
    before = first_path.read_bytes()
    second, second_path = _eval(ckpt, ["knn:k=10", "odin"])
    third, third_path = _eval(ckpt, ["msp", "energy"], limit=20)
    assert len({first_path, second_path, third_path}) == 3
    assert first_path.read_bytes() == before, "a re-evaluation replaced an earlier one"
    assert second_path.name == results_file(evaluation_name(["knn:k=10", "odin"], ["noise"]))
    assert third["partial"] == {"limit": 20}
    # Each results file names its own scores file, which exists beside it.
    for doc, path in ((first, first_path), (second, second_path), (third, third_path)):
        assert (path.parent / doc["scores_file"]["name"]).is_file()

    # The report merges the full evaluations of the run (the partial one stays out).
    table = tidy([r for r in load_results(find_results([tmp_path])) if not r.get("partial")])
    assert set(table["detector"]) - {""} == {"msp", "energy", "knn[k=10]", "odin"}
    markdown = render(load_results(find_results([tmp_path])), "markdown")
    assert "partial evaluation (--limit 20)" in markdown


def test_an_evaluation_on_other_data_is_written_beside_and_reported_apart(tiny_runs, tmp_path: Path) -> None:
    """Another registry whose `noise` set differs: not the same data, so the earlier results stay
    and the report never averages the two noises under one label. A registry that differs only
    elsewhere (a comment, another suite) defines the same data: nothing is split."""
    import yaml

    from halo_bench.data import load_registry
    from halo_bench.data.registry import DEFAULT_REGISTRY

    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "run")
    first, first_path = _eval(ckpt, ["msp"])
    before = first_path.read_bytes()
    data = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    same = tmp_path / "same.yaml"  # the same datasets, written otherwise
    same.write_text("# a comment\n" + yaml.safe_dump(data))
    data["datasets"]["uniform-noise"]["params"]["seed"] = 9
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))

    def eval_with(registry: Path) -> tuple[dict, Path]:
        return evaluate(EvalConfig(checkpoint=str(ckpt), detectors=["msp"], device="cpu", ood=["noise"]),
                        load_registry(registry))

    second, second_path = eval_with(other)
    assert second_path != first_path and first_path.read_bytes() == before
    assert second_path.name == f"{first_path.stem}_data-{second['data_fingerprint'][:8]}.json"
    assert second["data_fingerprint"] != first["data_fingerprint"]
    assert second["ood"]["msp"]["far"] != first["ood"]["msp"]["far"]  # other noise images, other numbers
    labels = set(tidy(load_results(find_results([tmp_path / "run"])))["model"])
    assert len(labels) == 2 and all("data=" in label for label in labels), labels
    third, third_path = eval_with(same)  # same data: the evaluation of the same settings, replaced
    assert third_path == first_path and third["data_fingerprint"] == first["data_fingerprint"]


def _doc(loss: str, seed: int, detectors: dict[str, float], created: str = "2026-01-01", sha: str = "a") -> dict:
    ood = {d: {"sets": {"noise": {"group": "far", "auroc": v, "fpr95": 100 - v}},
               "far": {"auroc": v, "fpr95": 100 - v}} for d, v in detectors.items()}
    return {
        "schema": RESULTS_SCHEMA, "schema_version": 2, "created": created, "run": f"{loss}-{seed}",
        "suite": "digits", "id_dataset": "digits", "seed": seed, "model": {"name": "resnet18", "loss": loss},
        "loss": {"name": loss, "tag": loss, "label": loss.upper()},
        "checkpoint": {"sha256": sha * 64, "complete": True, "epochs": 10},
        "id_metrics": {"acc": 90.0 + seed}, "ood": ood,
        "train_config": {"epochs": 10, "seed": seed, "loss": loss},
        "datasets": {"digits": {"group": "id"}, "noise": {"group": "far"}},
    }


def test_a_cell_backed_by_fewer_seeds_says_so(tmp_path: Path) -> None:
    docs = [_doc(loss, seed, {"msp": 80.0 + seed + (loss == "halo")}) for loss in ("cce", "halo") for seed in (0, 1, 2)]
    # seed 0 of HALO was also evaluated with knn alone: knn has one seed, msp keeps all three
    docs.append(_doc("halo", 0, {"knn": 70.0}, created="2026-02-01"))
    for i, doc in enumerate(docs):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "results.json").write_text(json.dumps(doc))
    markdown = render(load_results(find_results([tmp_path])), "markdown", baseline="cce")
    msp = next(line for line in markdown.splitlines() if line.startswith("| msp"))
    knn = next(line for line in markdown.splitlines() if line.startswith("| knn"))
    assert "of 3 seeds" not in msp and "81.00 ± 1.00" in msp and "+1.00" in msp
    assert "70.00 (1 of 3 seeds)" in knn


def test_evaluations_of_an_earlier_checkpoint_are_left_out(tmp_path: Path) -> None:
    old = _doc("cce", 0, {"msp": 50.0}, created="2026-01-01", sha="a")
    new = _doc("cce", 0, {"energy": 60.0}, created="2026-02-01", sha="b")
    for i, doc in enumerate((old, new)):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "results.json").write_text(json.dumps(doc))
    table = tidy(load_results(find_results([tmp_path])))
    assert set(table["detector"]) - {""} == {"energy"} and table.attrs["dropped"] == 1


# 2. The cache and the results name the checkpoint bytes that were loaded ------------------------

def test_checkpoint_replaced_while_evaluating_is_not_mixed_up(tiny_runs, tmp_path: Path, monkeypatch) -> None:
    import halo_bench.models.checkpoint as ev

    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "run")
    loaded_sha = hio.sha256_file(ckpt)
    original = ev.load_checkpoint

    def load_then_replace(path):  # `train` rewrites ckpt.pt right after eval read it
        out = original(path)
        shutil.copy(tiny_runs["halo"], ckpt)
        return out

    monkeypatch.setattr(ev, "load_checkpoint", load_then_replace)
    results, _ = _eval(ckpt, ["msp"])
    monkeypatch.undo()
    assert results["checkpoint"]["sha256"] == loaded_sha
    keys = {torch.load(f, weights_only=True)["key"]["checkpoint_sha256"] for f in (ckpt.parent / CACHE_DIR).glob("*.pt")}
    assert keys == {loaded_sha}
    # The replaced file's evaluation computes its own passes: HALO's logits have K+1 columns.
    again, _ = _eval(ckpt, ["msp"])
    assert again["checkpoint"]["sha256"] == hio.sha256_file(ckpt) != loaded_sha
    assert again["feature_cache"]["read"] == []


# 3. A scores file is bound to its results file ---------------------------------------------------

def test_scores_file_of_another_run_is_refused(tiny_runs, tmp_path: Path) -> None:
    cce = _copy_run(tiny_runs["cce"], tmp_path / "cce")
    halo = _copy_run(tiny_runs["halo"], tmp_path / "halo")
    res_c, path_c = _eval(cce, ["msp", "energy"])
    res_h, path_h = _eval(halo, ["msp", "energy"])
    name = res_c["scores_file"]["name"]
    shutil.copy(path_h.parent / name, path_c.parent / name)  # a copied (or half-replaced) scores file
    results = load_results([path_c, path_h])
    problems = scores_mismatch(tidy(results).attrs["scores"])
    assert problems == [f"{path_c.parent / name}: not the scores its results file was computed with (hash differs); "
                        "its bootstrap intervals and figures are left out. Re-run `halo-bench eval` on that run."]
    markdown = render(results, "markdown", baseline="cce")
    assert "not the scores its results file was computed with" in markdown
    assert "] (bootstrap)" not in markdown  # no interval from the wrong run's scores


# 4. Corruption is detected -------------------------------------------------------------------------

def _flip_tensor_bytes(path: Path, count: int = 16) -> None:
    """Flip bytes inside the largest tensor's stored data (zip entries are stored uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26:header + 28], "little") \
        + int.from_bytes(data[header + 28:header + 30], "little")
    for i in range(count):
        data[start + 8 * i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_checkpoint_are_refused(tiny_runs, tmp_path: Path) -> None:
    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "run")
    read_checkpoint(ckpt)  # intact
    _flip_tensor_bytes(ckpt)
    with pytest.raises(HaloBenchError, match="is corrupt: its content does not match the digest"):
        read_checkpoint(ckpt)
    cli_fails("eval", ckpt, "--detectors", "msp", match="is corrupt")


def test_non_finite_weights_are_refused(tiny_runs, tmp_path: Path) -> None:
    model, meta = load_checkpoint(tiny_runs["cce"])
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
    ckpt = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(ckpt, model, {k: v for k, v in meta.items() if k != "checkpoint_sha256"})
    shutil.copy(tiny_runs["cce"].parent / "config.json", ckpt.parent)
    with pytest.raises(HaloBenchError, match=r"non-finite weights \(NaN or inf in embed.weight\)"):
        load_checkpoint(ckpt)
    cli_fails("eval", ckpt, "--detectors", "msp", match="non-finite weights")
    assert not (ckpt.parent / CACHE_DIR).exists()  # no NaN features cached


def test_corrupted_feature_cache_is_recomputed(tiny_runs, tmp_path: Path, monkeypatch) -> None:
    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "run")
    clean, _ = _eval(ckpt, ["msp"])
    for file in (ckpt.parent / CACHE_DIR).glob("*.pt"):
        state = torch.load(file, weights_only=True)
        state["logits"][:40] += 3.0  # corrupted values, everything else (key, shapes) intact
        torch.save(state, file)
    calls = {"n": 0}
    original = Classifier.forward_penultimate

    def counted(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(Classifier, "forward_penultimate", counted)
    again, _ = _eval(ckpt, ["msp"])
    assert calls["n"] > 0 and again["feature_cache"]["read"] == []
    assert again["id_metrics"] == clean["id_metrics"]


# 5. One writer per run folder ------------------------------------------------------------------------

def test_a_second_train_of_one_run_is_locked_out(registry, tmp_path: Path) -> None:
    from halo_bench.train.loop import TrainConfig, train

    cfg = TrainConfig(model="test_resnet", loss="cce", epochs=1, out=str(tmp_path))
    run_dir = tmp_path / cfg.resolved(registry).run_name
    with hio.folder_lock(run_dir, "train (another process)"):
        with pytest.raises(HaloBenchError, match=rf"{run_dir} is being written by another halo-bench process "
                                                 rf"\(pid {os.getpid()} on .*train \(another process\)"):
            train(cfg, registry)
    assert not (run_dir / "ckpt.pt").exists()
    # A lock left by a killed process (its file still names it) is taken over.
    run_dir.mkdir(exist_ok=True)
    (run_dir / hio.LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "x", "what": "train", "command": "c",
                                                      "since": "then"}))
    assert train(cfg, registry).checkpoint.is_file()
    assert (run_dir / hio.LOCK_FILE).read_text() == ""  # released


# 6 is tested with the flag checks (tests/test_integrity_registry.py). 7. Full disks --------------------

@pytest.fixture
def full_disk(monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)


def test_full_disk_leaves_the_earlier_file_intact(tmp_path: Path, full_disk) -> None:
    path = tmp_path / "results.json"
    path.write_text("earlier")
    with pytest.raises(HaloBenchError, match=rf"could not write {path}: No space left on device; nothing was "
                                             r"replaced \(the earlier results.json is intact\)"):
        hio.atomic_write_json(path, {"new": 1})
    assert path.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_full_disk_in_every_command_is_one_message(tiny_runs, tmp_path: Path, monkeypatch) -> None:
    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "run")
    cli_ok("eval", ckpt, "--detectors", "msp", "--ood", "noise", "--device", "cpu")
    (results,) = ckpt.parent.glob("results*.json")
    earlier = results.read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    cli_fails("eval", ckpt, "--detectors", "msp", "--ood", "noise", "--device", "cpu",
              match=f"could not write {ckpt.parent}")
    assert results.read_bytes() == earlier
    cli_fails("report", tmp_path, "-o", tmp_path / "r.md", match=f"could not write {tmp_path / 'r.md'}")
    cli_fails("report", tmp_path, "--plots", tmp_path / "figs", match="could not write")
    cli_fails("train", "test_resnet", "--epochs", "1", "--out", tmp_path / "t", match="could not write")
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []


def test_full_disk_while_taking_a_run_folders_lock_is_one_message(tiny_runs, tmp_path: Path, monkeypatch) -> None:
    """The first thing train and eval write is the folder's lock file: a full disk there too is
    one line, exit 2, no traceback."""
    import builtins

    class Full:  # a lock file whose writes the disk refuses
        def __init__(self, handle) -> None:
            self.handle = handle

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self.handle, name)

    monkeypatch.setattr(hio, "open", lambda *a, **k: Full(builtins.open(*a, **k)), raising=False)
    cli_fails("train", "test_resnet", "--epochs", "1", "--out", tmp_path / "t",
              match=".halo-bench.lock: No space left on device; nothing in")
    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "run")
    cli_fails("eval", ckpt, "--detectors", "msp", "--ood", "noise", "--device", "cpu", "--out", tmp_path / "e",
              match=".halo-bench-eval.lock: No space left on device; nothing in")
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").rglob("*.pt"))


# 8. bench checks its detectors before anything trains ----------------------------------------------

@pytest.mark.parametrize(("spec", "match"), [("bogus", "unknown detector 'bogus'"),
                                             ("knn:k=0", "knn': k must be an integer >= 1"),
                                             ("knn:k=100000", "knn: k=100000 exceeds the neighbours that the 650 "
                                                              "ID-train samples give")])
def test_bench_refuses_bad_detectors_before_training(tmp_path: Path, monkeypatch, spec: str, match: str) -> None:
    import halo_bench.train.loop

    monkeypatch.setattr(halo_bench.train.loop, "train", lambda *a, **k: pytest.fail("trained before checking"))
    cli_fails("bench", "--model", "test_resnet", "--epochs", "1", "--detectors", spec, "--out", tmp_path, match=match)


def test_eval_refuses_a_knn_k_past_the_train_split_before_any_forward_pass(tiny_runs, tmp_path: Path,
                                                                          monkeypatch) -> None:
    import halo_bench.evaluate.run

    monkeypatch.setattr(halo_bench.evaluate.run, "forward_pass", lambda *a, **k: pytest.fail("ran a forward pass"))
    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "run")
    cli_fails("eval", ckpt, "--detectors", "msp,knn:k=650", "--device", "cpu", "--no-cache",
              match="knn: k=650 exceeds the neighbours that the 650 ID-train samples give (k must be below 650)")


def test_a_launcher_bench_refuses_a_knn_k_past_the_train_split_before_submitting(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    cli_fails("bench", "--model", "test_resnet", "--epochs", "1", "--seeds", "0", "--losses", "cce", "--detectors",
              "knn:k=100000", "--launcher", "local", "--out", tmp_path, match="knn: k=100000 exceeds the neighbours")
    assert not (tmp_path / "jobs").exists()  # nothing submitted


def test_bench_refuses_a_halo_detector_for_cce_runs(tmp_path: Path) -> None:
    cli_fails("bench", "--model", "test_resnet", "--losses", "cce,halo", "--detectors", "msp,halo_abstain",
              "--out", tmp_path, match="--detectors for the cce runs: detector 'halo_abstain' reads a HALO head")


# 9. Leftovers of killed writers ----------------------------------------------------------------------

def test_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    dead = tmp_path / f".results.json.{hio._HOST}.999999.abc.tmp"
    alive = tmp_path / f".results.json.{hio._HOST}.{os.getpid()}.def.tmp"  # a live writer's: kept
    other = tmp_path / ".scores.csv.gz.x.999999.ghi.tmp"  # another file's, another host's: kept
    for path in (dead, alive, other):
        path.write_text("half")
    hio.atomic_write_text(target, "new")
    assert not dead.exists() and alive.exists() and other.exists() and target.read_text() == "new"


def test_plots_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    from halo_bench.report.plots import Plot, write_plots

    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    write_plots([Plot("one", "One", fig)], tmp_path)
    good = (tmp_path / "one.pdf").read_bytes()
    assert good.startswith(b"%PDF")

    savefig = Figure.savefig

    def killed(self, fname, *args, **kwargs):  # the process dies half-way through writing the PDF
        if kwargs.get("format") != "pdf" and not str(fname).endswith(".pdf"):
            return savefig(self, fname, *args, **kwargs)
        if hasattr(fname, "write"):
            fname.write(b"%PDF-1.4 half")
        else:
            Path(fname).write_bytes(b"%PDF-1.4 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        write_plots([Plot("one", "One", fig)], tmp_path)
    assert (tmp_path / "one.pdf").read_bytes() == good  # the earlier PDF, whole
    assert (tmp_path / "one.svg").read_bytes().endswith(b"</svg>\n")  # the new SVG, whole


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_around_the_final_checkpoint_keeps_every_epoch_line_once(registry, tmp_path: Path, monkeypatch,
                                                                        when: str) -> None:
    """Killed just before or just after the final checkpoint is written: the finished run's
    metrics.jsonl has every epoch's line, once (a line written before a checkpoint that never
    came is replaced when the epoch is trained again)."""
    import halo_bench.train.loop as tr

    cfg = tr.TrainConfig(model="test_resnet", loss="cce", epochs=2, out=str(tmp_path))
    original = tr.save_checkpoint

    def killed_at_the_end(path, model, meta, train_state=None):
        if meta.get("complete"):
            if when == "after":
                original(path, model, meta, train_state)
            raise KeyboardInterrupt  # kill -9 beside the epoch's last write
        return original(path, model, meta, train_state)

    monkeypatch.setattr(tr, "save_checkpoint", killed_at_the_end)
    with pytest.raises(KeyboardInterrupt):
        tr.train(cfg, registry)
    monkeypatch.undo()
    result = tr.train(cfg, registry)
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert read_checkpoint(result.checkpoint)["meta"]["complete"] is True


def test_evaluation_names() -> None:
    assert evaluation_name() == "" and results_file("") == "results.json"
    assert evaluation_name(["knn:k=10", "odin"]) == "det-knn-k-10+odin"
    assert evaluation_name(None, ["noise", "faces"], 50, True, False) == "ood-faces+noise_limit50_tune_noamp"
    long = evaluation_name([f"knn:k={k}" for k in range(1, 40)])
    assert len(long) == 60 and long != evaluation_name([f"knn:k={k}" for k in range(2, 41)])
    assert np.all([c.isalnum() or c in "-+_." for c in long])


def test_report_of_results_without_scores_hash_still_reads(tmp_path: Path) -> None:
    """Version-1 results (before the hash) are read; their scores are used unverified."""
    doc = _doc("cce", 0, {"msp": 80.0})
    doc["schema_version"] = 1
    doc["scores_file"] = "scores.csv.gz"
    (tmp_path / "results.json").write_text(json.dumps(doc))
    pd.DataFrame({"dataset": ["digits"], "group": ["id"], "label": [0], "pred": [0], "msp": [0.9]}).to_csv(
        tmp_path / "scores.csv.gz", index=False)
    table = tidy(load_results([tmp_path / "results.json"]))
    assert table.attrs["scores"][("digits", "resnet18", "cce", 0)] == [(str(tmp_path / "scores.csv.gz"), None)]
    assert scores_mismatch(table.attrs["scores"]) == []


def test_a_later_narrower_evaluation_keeps_the_default_evaluations_scores_in_the_report(tmp_path: Path) -> None:
    """`eval RUN --detectors knn` after a bench: the report's intervals and figures still read
    every other detector's scores from the default evaluation's file, beside the new one's."""
    import gzip

    from halo_bench.core.io import sha256_bytes
    from halo_bench.report.assemble import build_report
    from halo_bench.report.synthetic import write_run

    small = {"sets": {"near-a": ("near", 120), "far-a": ("far", 100)}, "detectors": ("msp", "energy", "knn"),
             "n_id": 150}
    paths = [write_run(tmp_path, loss, 0, 1.0 + i, **small) for i, loss in enumerate(("cce", "halo"))]

    def bootstrapped() -> set[tuple]:
        deltas = build_report(load_results(paths), "cce").deltas
        rows = deltas[deltas["interval"] == "bootstrap over samples"]
        return set(zip(rows["detector"], rows["dataset"], rows["metric"], strict=True))

    before = bootstrapped()
    assert ("", "digits", "ece") in before and ("energy", "far mean", "auroc") in before
    run = paths[1].parent  # HALO: a newer evaluation with knn only, its own results and scores files
    doc = json.loads(paths[1].read_text())
    scores = pd.read_csv(run / "scores.csv.gz")[["dataset", "group", "index", "label", "pred", "knn"]]
    data = gzip.compress(scores.to_csv(index=False, float_format="%.17g").encode(), mtime=0)
    (run / "scores-det-knn.csv.gz").write_bytes(data)
    doc.update(created="2026-11-29T00:00:00+00:00", evaluation={"id": "later", "name": "det-knn"},
               ood={"knn": doc["ood"]["knn"]}, detectors={"knn": doc["detectors"]["knn"]},
               scores_file={"name": "scores-det-knn.csv.gz", "sha256": sha256_bytes(data)})
    (run / "results-det-knn.json").write_text(json.dumps(doc))
    paths = [paths[0], *find_results([run])]
    assert sorted(p.name for p in paths) == ["results-det-knn.json", "results.json", "results.json"]
    assert bootstrapped() == before  # nothing lost: ECE, msp, energy still from the default file
    # and both runs have every detector: no warning that some were evaluated on some runs only
    assert not any("some runs only" in w for w in build_report(load_results(paths), "cce").provenance.warnings)


def test_a_bench_on_other_data_counts_its_own_evaluation_as_finished(tiny_runs, tmp_path: Path) -> None:
    """The launcher's bookkeeping finds a run's evaluation of the bench's data: the data variant
    where the run folder already holds an evaluation of data defined otherwise."""
    import yaml

    from halo_bench.bench.jobs import finished_results, plan_runs
    from halo_bench.bench.sweep import BenchConfig
    from halo_bench.data import load_registry
    from halo_bench.data.registry import DEFAULT_REGISTRY

    ckpt = _copy_run(tiny_runs["cce"], tmp_path / "runs" / tiny_runs["cce"].parent.name)
    data = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    data["datasets"]["uniform-noise"]["params"]["seed"] = 9
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    cfg = BenchConfig(model="test_resnet", seeds=[0], losses=["cce"], epochs=2, detectors=["msp"],
                      out=str(tmp_path / "runs"), device="cpu")
    (plan,) = plan_runs(cfg, load_registry())
    assert finished_results(plan, ["msp"]) is None  # not evaluated yet
    _, default_path = evaluate(cfg.eval_config(ckpt), load_registry())
    assert finished_results(plan, ["msp"]) == default_path
    (plan,) = plan_runs(cfg, load_registry(other))  # the same bench on other data
    assert finished_results(plan, ["msp"]) is None  # the folder's evaluation is of the other data
    _, variant = evaluate(cfg.eval_config(ckpt), load_registry(other))
    assert variant != default_path and finished_results(plan, ["msp"]) == variant
