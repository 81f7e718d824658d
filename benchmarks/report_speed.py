"""How long `halo-bench report --format html` takes for 6 and for 30 runs, as a user runs it.

Synthetic evaluated runs with the embedded suite's shapes (325 ID test samples, 5 OOD sets of
300-714 samples, 12 detectors, HALO's 2 more; halo_bench.report.synthetic) are written to a
temporary folder, then the command runs as a fresh process (imports included), `--repeat`
times each; the fastest and the median are printed, with markdown for comparison and the
page's size. Goal (issue 20): HTML for 6 runs in under 5 s on 2 cores.

    python benchmarks/report_speed.py [--repeat 3] [--runs 6,30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from halo_bench.report.synthetic import write_bench


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "halo_bench", *args], check=True, capture_output=True,
                   env={**os.environ, "HALO_BENCH_PROGRESS": "0"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", default="6,30", help="comma-separated run counts (losses x seeds)")
    args = parser.parse_args()
    rows = []
    for count in (int(n) for n in args.runs.split(",")):
        losses = ("cce", "halo", "logitnorm", "cce+ls0.1", "halo2")[: max(2, count // 6 + (count % 6 > 0))]
        seeds = tuple(range(count // len(losses)))
        with tempfile.TemporaryDirectory() as folder:
            paths = write_bench(Path(folder) / "runs", losses, seeds)
            out = Path(folder) / "report.html"
            for fmt in ("markdown", "html"):
                times = [timed(["report", str(Path(folder) / "runs"), "--format", fmt, "-o", str(out)])
                         for _ in range(args.repeat)]
                rows.append((len(paths), fmt, min(times), statistics.median(times), out.stat().st_size / 1024))
    print(f"{'runs':>5} {'format':>9} {'fastest s':>10} {'median s':>9} {'size KB':>8}")
    for runs, fmt, fastest, median, size in rows:
        print(f"{runs:>5} {fmt:>9} {fastest:>10.2f} {median:>9.2f} {size:>8.0f}")
    print(f"({os.cpu_count()} CPUs, {args.repeat} repeats each, fresh processes: imports included)")


if __name__ == "__main__":
    main()
