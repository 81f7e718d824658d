"""How long a mistake takes to be reported: each bad flag, path or name as a fresh
`halo-bench` process, timed end to end, beside what importing torch and timm alone costs
(what every error cost when the CLI loaded them before checking its arguments).

    python benchmarks/error_latency.py            # 5 repeats per case
    python benchmarks/error_latency.py --repeats 10

Run it once before, so that timm's model-name list is cached (the first call after a
timm upgrade writes it, and that one imports timm).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from tabulate import tabulate

CLI = [sys.executable, "-m", "halo_bench"]
CASES = [
    ("unknown loss", ["train", "resnet18", "--loss", "focal"], 2),
    ("non-finite flag", ["train", "resnet18", "--lr", "nan"], 2),
    ("misspelt model", ["train", "resnet81"], 2),
    ("pretrained tag without --pretrained", ["train", "resnet18.a1_in1k"], 2),
    ("unknown suite", ["train", "resnet18", "--suite", "digitz"], 2),
    ("unknown data pipeline", ["train", "resnet18", "--data-pipeline", "gpu"], 2),
    ("repeated seed", ["bench", "--seeds", "0,0"], 2),
    ("missing checkpoint", ["eval", "nowhere/ckpt.pt"], 2),
    ("unknown report format", ["report", "--format", "docx"], 2),
    ("listing: losses", ["losses"], 0),
    ("listing: detectors", ["detectors"], 0),
    ("listing: datasets", ["datasets"], 0),
    ("--version", ["--version"], 0),
]
REFERENCE = ("reference: import torch, timm", [sys.executable, "-c", "import torch, timm"], 0)


def _time(command: list[str], expected: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    if done.returncode != expected:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}, expected {expected}:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, argv, code in [*CASES, REFERENCE]:
        command = argv if name.startswith("reference") else [*CLI, *argv]
        _time(command, code)  # warm the file cache
        times = [_time(command, code) for _ in range(args.repeats)]
        shown = "(python -c)" if name.startswith("reference") else "halo-bench " + " ".join(argv)
        rows.append([name, shown, f"{statistics.median(times):.2f}", f"{max(times):.2f}",
                     "yes" if max(times) < 1.0 or name.startswith("reference") else "NO"])
    print(tabulate(rows, ["case", "command", "median s", "max s", "< 1 s"], tablefmt="github"))
    print(f"{args.repeats} runs each after one warm-up, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
