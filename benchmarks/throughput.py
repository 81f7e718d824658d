"""Training and evaluation throughput of CCE vs HALO on CIFAR-shaped data.

Writes N random 32x32 images in the CIFAR-10 python-archive format (the real loader
reads them; torchvision's checksum is bypassed because the bytes are random), then
for each loss trains `--epochs` epochs with the `cifar10` suite's recipe and times
the steady-state epoch, one forward pass over the test split and ODIN's gradient
passes. Prints a table; on a GPU this measures the AMP / channels-last / compile paths.

    python benchmarks/throughput.py                       # 50,000 train / 10,000 test
    python benchmarks/throughput.py --n-train 2000 --n-test 1000 --model test_resnet --device cpu
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torchvision.datasets.cifar as tv_cifar
from tabulate import tabulate

from halo_bench.data import LoadOptions, load_split
from halo_bench.data.synthetic import write_cifar_archive
from halo_bench.detectors import DETECTORS, DetectorContext
from halo_bench.features import forward_pass
from halo_bench.models import load_checkpoint
from halo_bench.data import load_registry
from halo_bench.devices import amp_dtype, resolve_device
from halo_bench.train import TrainConfig, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="timm name (resnet18 builds resnet18_cifar)")
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is timed (the first warms up)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--workdir", default=None, help="keep the data and runs here (default: a temp dir)")
    args = parser.parse_args()

    tv_cifar.check_integrity = lambda *a, **k: True  # random bytes: skip only the md5 check
    registry = load_registry()
    suite = registry.suite("cifar10")
    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        started = time.perf_counter()
        write_cifar_archive(work / "data" / "cifar10", "cifar10", args.n_train, args.n_test)
        print(f"wrote {args.n_train} + {args.n_test} CIFAR-format images in {time.perf_counter() - started:.1f}s")
        for loss in ("cce", "halo"):
            cfg = TrainConfig(model=args.model, loss=loss, suite="cifar10", epochs=args.epochs,
                              batch_size=args.batch_size, device=args.device, amp=not args.no_amp,
                              channels_last=not args.no_channels_last, compile=args.compile,
                              num_workers=args.num_workers, out=str(work / "runs"), data_root=str(work / "data"))
            result = train(cfg, registry, force=True)
            history = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
            model, meta = load_checkpoint(result.checkpoint)
            model.to(device)
            dtype = amp_dtype(device, not args.no_amp)
            test = load_split(registry.dataset("cifar10"), "test", suite.data_config,
                              LoadOptions(work / "data"))
            _sync(device)
            t0 = time.perf_counter()
            outputs = forward_pass(model, test, device, 512, dtype, "forward", args.num_workers or 0)
            _sync(device)
            t1 = time.perf_counter()
            ctx = DetectorContext(model=model, device=device, data_config=suite.data_config, batch_size=512,
                                  num_workers=args.num_workers or 0, amp_dtype=dtype)
            DETECTORS["odin"]().score(ctx, outputs, test)
            _sync(device)
            t2 = time.perf_counter()
            rows.append([loss, meta["model"]["arch"], str(device), meta["amp_dtype"] or "fp32",
                         history[-1]["seconds"], history[-1]["images_per_second"],
                         round(args.n_test / (t1 - t0)), round(args.n_test / (t2 - t1)),
                         round(history[-1]["train_acc"], 1)])
    print(tabulate(rows, ["loss", "arch", "device", "autocast", "epoch s", "train img/s", "forward img/s",
                          "ODIN img/s", "train acc %"], tablefmt="github"))
    print(f"epochs {args.epochs} (last timed), batch {args.batch_size}, channels_last "
          f"{not args.no_channels_last}, compile {args.compile}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
