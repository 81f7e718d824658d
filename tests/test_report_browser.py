"""The HTML report as a person sees it: opened in headless Chromium (Debian's `chromium`,
driven by Playwright's Python package) at a laptop and at a phone width. No console error,
no network request but the page itself, every image decoded, nothing wider than a phone's
viewport, every table-of-contents link landing on an element. Screenshots of both widths are
saved under tests/artifacts/ (ignored by git) for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-loss x 3-seed synthetic bench with a one-seed third loss (mixed seed sets), as HTML."""
    from halo_bench.report.render import render
    from halo_bench.report.synthetic import write_bench, write_run
    from halo_bench.report.tidy import load_results

    folder = tmp_path_factory.mktemp("browser")
    small = {"detectors": ("msp", "energy", "odin", "mahalanobis", "knn", "vim", "mds", "rmds"), "n_id": 250,
             "sets": {"digits-6to9": ("near", 300), "textures": ("far", 250), "noise": ("far", 200)}}
    paths = write_bench(folder, ("cce", "halo"), (0, 1, 2), **small)
    paths.append(write_run(folder, "logitnorm", 0, 1.2, **small))
    out = folder / "report.html"
    out.write_text(render(load_results(paths), "html"))
    return out


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.mark.parametrize(("width", "height", "name"), [(1400, 900, "laptop"), (390, 844, "phone")])
def test_report_reads_in_a_real_browser(browser, page_file: Path, width: int, height: int, name: str) -> None:
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))
    url = page_file.as_uri()
    page.goto(url)
    page.wait_for_load_state("load")

    assert errors == []
    assert [r for r in requests if not r.startswith(("data:", url))] == []  # nothing from elsewhere
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
    assert len(images) >= 6 and all(done and w > 0 for done, w, _ in images), images
    # Nothing sticks out of the viewport: wide tables scroll inside their own boxes.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate("Math.max(...[...document.querySelectorAll('main > *, section > *')]"
                         ".map(e => e.getBoundingClientRect().right))") <= width + 0.5
    # Figures keep their text readable: never drawn under 80% of their own width (on a phone
    # they scroll sideways in their box instead of shrinking to 3-pixel labels).
    scales = page.eval_on_selector_all("figure img", "els => els.map(e => e.clientWidth / e.naturalWidth)")
    assert scales and min(scales) >= 0.79, scales
    # Body text is readable without zooming: the page is laid out at the device's width.
    assert page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)") >= 15
    # Every contents link lands on an element of the page.
    anchors = page.eval_on_selector_all("nav a", "els => els.map(e => e.getAttribute('href'))")
    assert len(anchors) >= 8 and all(a.startswith("#") for a in anchors)
    missing = [a for a in anchors if not page.evaluate(f"!!document.getElementById({a[1:]!r})")]
    assert missing == []
    page.click(f"nav a[href='{anchors[-1]}']")
    assert page.evaluate(f"document.getElementById({anchors[-1][1:]!r}).getBoundingClientRect().top") < height
    # The findings come first, and the mixed seed sets are flagged.
    text = page.inner_text("main")
    assert text.index("Findings") < text.index("How these numbers were made") < text.index("in-distribution")
    assert "different seeds" in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"report-{name}.png"), full_page=False)
    page.locator("#findings").screenshot(path=str(ARTIFACTS / f"report-{name}-findings.png"))
    context.close()
