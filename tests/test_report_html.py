"""HTML report, figures, bootstrap intervals and LaTeX bold, on synthetic runs whose
results.json numbers are computed from the scores.csv.gz the test writes beside them."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from halo_bench.evaluate import metrics
from halo_bench.results import RESULTS_SCHEMA, SCORES_FILE

K = 3
SETS = {"blur": "near", "noise": "far"}


def _run(folder: Path, loss: str, seed: int, quality: float, n_id: int = 240, n_ood: int = 160) -> Path:
    """One evaluated run: scores.csv.gz (msp, energy) and the results.json computed from them."""
    rng = np.random.default_rng(1000 * seed + len(loss))
    labels = rng.integers(0, K, n_id)
    logits = rng.normal(0, 1, (n_id, K))
    logits[np.arange(n_id), labels] += quality * rng.uniform(0, 3, n_id)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred, msp = probs.argmax(axis=1), probs.max(axis=1)
    energy_id = np.round(rng.normal(quality, 1, n_id), 2)  # rounded: ties
    rows = [pd.DataFrame({"dataset": "digits", "group": "id", "index": np.arange(n_id), "label": labels,
                          "pred": pred, "msp": msp, "energy": energy_id})]
    ood: dict = {"msp": {"sets": {}}, "energy": {"sets": {}}}
    for name, group in SETS.items():
        ood_logits = rng.normal(0, 1, (n_ood, K))
        ood_probs = np.exp(ood_logits) / np.exp(ood_logits).sum(axis=1, keepdims=True)
        frame = pd.DataFrame({"dataset": name, "group": group, "index": np.arange(n_ood), "label": -1,
                              "pred": ood_probs.argmax(axis=1), "msp": ood_probs.max(axis=1),
                              "energy": np.round(rng.normal(0, 1, n_ood), 2)})
        rows.append(frame)
        for det, sid in (("msp", msp), ("energy", energy_id)):
            ood[det]["sets"][name] = {"group": group, **metrics.ood_metrics(sid, frame[det].to_numpy())}
    for det in ood.values():
        for name, group in SETS.items():
            det[group] = {m: v for m, v in det["sets"][name].items() if m != "group"}
    run = folder / f"{loss}-s{seed}"
    run.mkdir(parents=True)
    text = pd.concat(rows, ignore_index=True).to_csv(index=False, float_format="%.17g")
    (run / SCORES_FILE).write_bytes(gzip.compress(text.encode()))
    doc = {
        "schema": RESULTS_SCHEMA, "schema_version": 1, "created": "2026-01-01", "run": run.name,
        "suite": "digits", "id_dataset": "digits", "seed": seed, "model": {"name": "resnet18", "loss": loss},
        "loss": {"name": loss, "tag": loss, "label": loss.upper(), "knobs": {}, "changed": {}},
        "checkpoint": {"sha256": "0" * 64, "complete": True, "epochs": 3},
        "id_metrics": metrics.id_metrics(probs, labels, K), "ood": ood,
        "train_config": {"epochs": 3, "seed": seed, "loss": loss},
        "datasets": {"digits": {"group": "id"}, **{n: {"group": g} for n, g in SETS.items()}},
    }
    (run / "results.json").write_text(json.dumps(doc))
    return run / "results.json"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One seed each: CCE and a clearly better HALO (read-only: tests write elsewhere)."""
    folder = tmp_path_factory.mktemp("single")
    return [_run(folder, "cce", 0, 0.5), _run(folder, "halo", 0, 2.5)]


@pytest.fixture(scope="module")
def html_page(single: list[Path]) -> str:
    """Drawing the figures takes seconds: the HTML is rendered once for the tests that read it."""
    return _render(single, "html")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.urls: list[str] = []
        self.imgs = 0
        self.tables: list[list[list[str]]] = []  # table -> row -> the text of each <th> or <td>
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.imgs += tag == "img"
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


# A number as a whole token: "0.50" is not found in "10.50", "+0.505" or "0.50.1".
NUMBER = re.compile(r"(?<![\w.+-])[+-]?\d+\.\d+(?![\w.])")


def _markdown_tables(markdown: str) -> list[list[list[str]]]:
    """Each pipe table of a markdown text as rows of stripped cells (the |---| rule left out)."""
    tables: list[list[list[str]]] = []
    previous = False
    for line in markdown.splitlines():
        row = line.startswith("|")
        if row and not re.fullmatch(r"\|[-:| ]+\|", line.strip()):
            if not previous:
                tables.append([])
            tables[-1].append([cell.strip() for cell in line.strip().strip("|").split("|")])
        previous = row
    return tables


def _render(paths: list[Path], fmt: str, **kwargs) -> str:
    from halo_bench.report.render import render
    from halo_bench.report.tidy import load_results

    return render(load_results(paths), fmt, **kwargs)


def test_html_parses_embeds_every_plot_and_shows_every_markdown_number(single: list[Path], html_page: str) -> None:
    page_text = html_page
    markdown = _render(single, "markdown")
    page = _Page()
    page.feed(page_text)
    page.close()
    assert "://" not in page_text  # no URL anywhere (base64 has no ':')
    images = [url for url in page.urls if not url.startswith("#")]  # the rest: the contents' own anchors
    assert page.imgs >= 5 and len(images) == page.imgs  # forest, reliability, per-seed, distributions, ROC
    assert all(url.startswith("data:image/svg+xml;base64,") for url in images)
    # Every table, cell for cell the markdown report's (an interval is one cell, a number its own cell) ...
    tables = _markdown_tables(markdown)
    assert len(tables) >= 4 and sum(len(t) for t in tables) > 10 and page.tables == tables
    # ... and every number of the markdown report, as a whole token, as often somewhere in the page.
    numbers = Counter(NUMBER.findall(markdown))
    assert sum(numbers.values()) > 40
    assert not numbers - Counter(NUMBER.findall("\n".join(page.text)))


def test_reliability_bin_is_recomputed_from_the_scores_file(single: list[Path]) -> None:
    from halo_bench.report import plots
    from halo_bench.report.stats import run_scores
    from halo_bench.report.tidy import load_results, tidy

    table = tidy(load_results(single))
    frames = {(loss, 0): run_scores(table.attrs["scores"][("digits", "resnet18", loss, 0)]) for loss in ("cce", "halo")}
    plot = plots._reliability(table, frames, "digits", "resnet18", {"cce": [0], "halo": [0]},
                              table.attrs["labels"])  # what figures() draws
    frame = pd.read_csv(single[1].with_name(SCORES_FILE))
    ids = frame[frame["group"] == "id"]
    conf, correct = ids["msp"].to_numpy(), (ids["pred"] == ids["label"]).to_numpy()
    drawn = plot.data["halo"]
    b = int(np.argmax(drawn["count"]))
    lo, hi = b / 15, (b + 1) / 15
    inside = (conf > lo) & (conf <= hi)
    assert drawn["count"][b] == inside.sum() and drawn["acc"][b] == pytest.approx(correct[inside].mean())
    # every bin's count is drawn: the counts under the diagram add up to the ID test set
    assert drawn["count"].sum() == len(ids)
    # the title's ECE is the table's (the per-seed mean; one seed here)
    ece = json.loads(single[1].read_text())["id_metrics"]["ece"]
    assert drawn["ece_mean"] == pytest.approx(ece, abs=1e-12)
    assert any(f"ECE {ece:.4f}" in ax.get_title() for ax in plot.figure.axes)


def _reference_bootstrap(base: dict, other: dict, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    """Written from the protocol in halo_bench/report/stats.py's docstring, with scikit-learn's metrics."""
    from sklearn.metrics import roc_auc_score, roc_curve

    def fpr95(sid: np.ndarray, sood: np.ndarray) -> float:
        fpr, tpr, _ = roc_curve(np.r_[np.ones(sid.size), np.zeros(sood.size)], np.r_[sid, sood],
                                drop_intermediate=False)
        return 100 * fpr[np.argmax(tpr >= 0.95)]

    def ece(conf: np.ndarray, correct: np.ndarray) -> float:
        total = 0.0
        for i in range(15):
            inside = (conf > i / 15) & (conf <= (i + 1) / 15) if i else (conf <= 1 / 15)
            total += abs(correct[inside].sum() - conf[inside].sum())
        return total / conf.size

    rng = np.random.default_rng(seed)
    n_id, sizes = base["correct"].size, [base["ood"][s].size for s in SETS]
    diffs: dict[str, list[float]] = {}
    for _ in range(resamples):
        i = rng.integers(0, n_id, n_id)
        js = [rng.integers(0, m, m) for m in sizes]
        vals = []
        for run in (base, other):
            v = {"acc": 100 * run["correct"][i].mean(), "ece": ece(run["conf"][i], run["correct"][i])}
            for name, j in zip(SETS, js, strict=True):
                sid, sood = run["id"][i], run["ood"][name][j]
                v[f"{name} auroc"] = 100 * roc_auc_score(np.r_[np.ones(sid.size), np.zeros(sood.size)],
                                                         np.r_[sid, sood])
                v[f"{name} fpr95"] = fpr95(sid, sood)
            vals.append(v)
        for key in vals[0]:
            diffs.setdefault(key, []).append(vals[1][key] - vals[0][key])
    return {key: tuple(np.percentile(d, [2.5, 97.5])) for key, d in diffs.items()}


def test_bootstrap_interval_matches_an_independent_reference_on_random_inputs() -> None:
    from halo_bench.report.stats import Scores, bootstrap_delta

    rng = np.random.default_rng(3)
    raw = []
    for shift in (0.0, 0.6):
        n = 90
        conf = rng.uniform(0.3, 1.0, n)
        conf[:5] = 1.0  # top bin edge
        correct = (rng.uniform(size=n) < conf - shift / 4).astype(float)
        sid = np.round(rng.normal(shift, 1, n), 1)  # ties within and across ID and OOD
        ood = {name: np.round(rng.normal(-0.5 * k, 1, 60 + 10 * k), 1) for k, name in enumerate(SETS)}
        raw.append({"conf": conf, "correct": correct, "id": sid, "ood": ood})
    runs = [Scores(r["conf"], r["correct"], {"energy": r["id"]},
                   {name: (group, {"energy": r["ood"][name]}) for name, group in SETS.items()}) for r in raw]
    got = bootstrap_delta(runs[0], runs[1], resamples=60, seed=11, chunk=25).set_index(["dataset", "metric"])
    want = _reference_bootstrap(raw[0], raw[1], 60, 11)
    for key, (lo, hi) in want.items():
        name, metric = key.split(" ") if " " in key else ("", key)
        row = got.loc[(name, metric)]
        assert (row["delta_lo"], row["delta_hi"]) == pytest.approx((lo, hi), abs=1e-9), key
    # a different seed gives a different interval: the seed is used
    other = bootstrap_delta(runs[0], runs[1], resamples=60, seed=12).set_index(["dataset", "metric"])
    assert other.loc[("noise", "auroc"), "delta_lo"] != got.loc[("noise", "auroc"), "delta_lo"]
    # group means: the mean over the group's sets (one set per group here)
    assert got.loc[("far mean", "auroc"), "delta_lo"] == got.loc[("noise", "auroc"), "delta_lo"]


def test_single_seed_deltas_get_bootstrap_intervals_in_every_format(single: list[Path]) -> None:
    markdown = _render(single, "markdown")
    assert "(bootstrap)" in markdown and "1 seed 0" in markdown and "1000 resamples" in markdown
    acc = next(line for line in markdown.splitlines() if line.startswith("| acc"))
    assert re.search(r"\+\d+\.\d\d \[\+\d+\.\d\d, \+\d+\.\d\d\]\*{1,2} \(bootstrap\)", acc)  # HALO clearly better
    rows = json.loads(_render(single, "json"))["rows"]
    acc_row = next(r for r in rows if r["metric"] == "acc" and r["loss"] == "halo")
    assert acc_row["interval"] == "bootstrap over samples" and acc_row["excludes_zero"] is True
    assert 0 < acc_row["delta_lo"] < acc_row["delta"] < acc_row["delta_hi"]
    assert "bootstrap over samples" in _render(single, "csv")
    assert "(bootstrap)" in _render(single, "latex")


def test_several_seeds_keep_the_t_interval(tmp_path: Path) -> None:
    paths = [_run(tmp_path, loss, s, q) for s in (0, 1) for loss, q in (("cce", 0.5), ("halo", 2.5))]
    markdown = _render(paths, "markdown")
    cells = "\n".join(line for line in markdown.splitlines() if line.startswith("|"))
    assert "(bootstrap)" not in cells and "]" in cells and "2 seeds 0,1" in markdown


def test_latex_bolds_the_better_value_by_direction(single: list[Path]) -> None:
    latex = _render(single, "latex")
    acc = json.loads(single[1].read_text())["id_metrics"]["acc"]  # HALO: higher accuracy
    line = next(row for row in latex.splitlines() if row.startswith("acc"))
    assert f"\\textbf{{{acc:.2f}}}" in line and line.count("\\textbf") == 1
    ece = {p.parent.name: json.loads(p.read_text())["id_metrics"]["ece"] for p in single}
    line = next(row for row in latex.splitlines() if row.startswith("ECE"))
    assert f"\\textbf{{{min(ece.values()):.4f}}}" in line and line.count("\\textbf") == 1  # lower is better
    assert "\\toprule" in latex and "\\bottomrule" in latex and "$\\pm$" not in line


def test_plots_option_writes_svg_and_pdf_and_help_documents_it(single: list[Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure
    from typer.testing import CliRunner

    from halo_bench.cli import app
    from halo_bench.report import plots

    def small(report, render: bool = True, pdf: bool = False) -> list[plots.Plot]:  # every figure takes long
        fig = Figure(figsize=(2, 2))
        fig.subplots().plot(sorted(set(report.table["loss"])), [1, 2])
        return [plots.Plot("losses", "the runs' losses", fig), plots.Plot("again", "again", fig)]

    monkeypatch.setattr(plots, "figures", small)
    runner = CliRunner()
    out = tmp_path / "figs"
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(single[0].parent.parent), "--format", "markdown", "--output",
                                 str(page), "--plots", str(out)])
    assert result.exit_code == 0, result.output
    svgs, pdfs = sorted(out.glob("*.svg")), sorted(out.glob("*.pdf"))
    assert len(svgs) == len(pdfs) == 2 and pdfs[0].read_bytes().startswith(b"%PDF")
    assert "4 figure file(s)" in result.output
    assert b"<svg" in svgs[0].read_bytes()[:2000] and page.read_text().startswith("# halo-bench report")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["report", str(single[0].parent.parent), "--plots", str(blocker)])
    assert result.exit_code == 2 and "--plots" in result.output
    help_text = runner.invoke(app, ["report", "--help"], env={"COLUMNS": "200"}).output
    assert "--plots" in help_text and "html" in help_text


def test_bench_writes_the_html_report_beside_the_markdown(single: list[Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from halo_bench.bench.sweep import write_reports
    from halo_bench.report import plots

    drawn = []
    monkeypatch.setattr(plots, "figures", lambda report: drawn.append(report.baseline) or [])  # fast

    md = tmp_path / "out" / "report-digits.md"
    md.parent.mkdir()
    text = write_reports(single, "cce", md, "Wall time: 0.1 min for 2 runs.")
    page = md.with_suffix(".html").read_text()
    assert md.read_text() == text and "Wall time: 0.1 min" in page and "<table>" in page and drawn == ["cce"]


def test_markdown_does_not_import_matplotlib(single: list[Path]) -> None:
    code = ("import sys\nfrom halo_bench.report.render import render\nfrom halo_bench.report.tidy import load_results\n"
            f"render(load_results([{str(single[0])!r}, {str(single[1])!r}]), 'markdown')\n"
            "assert 'matplotlib' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_bootstrap_refuses_runs_on_different_samples() -> None:
    from halo_bench.report.stats import Scores, bootstrap_delta

    one = Scores(None, np.ones(5), {}, {})
    with pytest.raises(ValueError, match="not paired"):
        bootstrap_delta(one, Scores(None, np.ones(6), {}, {}))


def test_a_broken_scores_file_is_a_user_error(tmp_path: Path) -> None:
    from halo_bench.core.errors import HaloBenchError

    paths = [_run(tmp_path, "cce", 0, 0.5, n_id=30, n_ood=20), _run(tmp_path, "halo", 0, 2.5, n_id=30, n_ood=20)]
    paths[1].with_name(SCORES_FILE).write_bytes(b"not gzip")
    with pytest.raises(HaloBenchError, match="not a readable scores file"):
        _render(paths, "markdown")
