"""How long the embedded suite's far-OOD renderings take (they are generated on every load).

    python benchmarks/embedded_speed.py [--count 500] [--repeats 5]

Prints one row per generator: the best and median wall time over the repeats, after
one warm-up call that loads scikit-image's source images.
"""

from __future__ import annotations

import argparse
import statistics
import time

from halo_bench.data import embedded as E


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="Images per call.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per generator.")
    args = parser.parse_args()
    cases = {
        "texture/photo crops": lambda seed: E.skimage_crops(["brick", "grass", "gravel", "astronaut", "coffee"],
                                                            count=args.count, seed=seed),
        "uniform noise": lambda seed: E.uniform_noise(count=args.count, seed=seed),
    }
    print("| generator | images | best (s) | median (s) |\n|---|---|---|---|")
    for name, make in cases.items():
        make(0)  # warm-up: loads the source images
        times = []
        for seed in range(1, args.repeats + 1):
            started = time.perf_counter()
            make(seed)
            times.append(time.perf_counter() - started)
        print(f"| {name} | {args.count} | {min(times):.3f} | {statistics.median(times):.3f} |")


if __name__ == "__main__":
    main()
