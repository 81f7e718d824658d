"""Images per second of training (CCE and HALO), evaluation forward passes and ODIN, for
each input pipeline and precision setting, side by side in one run.

Writes N random 32x32 images in the CIFAR-10 python-archive format (the real loader
reads them; torchvision's checksum is bypassed because the bytes are random), then
trains each (setting, loss) for `--epochs` epochs with the `cifar10` suite's recipe and
reports the last epoch (the first warms up, and compiles with --compile settings).

Settings (`--settings`, comma-separated; default: all):
    loader-fp32        DataLoader + PIL workers, float32            (halo-bench before 0.6)
    device-fp32        uint8 images on the device, augmented there
    device-bf16        ... plus bf16 autocast (fp16 + scaler without bf16; CPU: no autocast)
    device-bf16-cl     ... plus channels-last
    device-bf16-cl-compile   ... plus torch.compile of the backbone
    loader-bf16-cl     the DataLoader with the fast model settings: what the pipeline alone buys

    python benchmarks/throughput.py                                   # 50,000 / 10,000, on the GPU
    python benchmarks/throughput.py --n-train 2000 --n-test 1000 --model test_resnet --device cpu \\
        --settings loader-fp32,device-fp32
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

from halo_bench.core.devices import amp_dtype, channels_last_format, resolve_device
from halo_bench.data import LoadOptions, load_registry, load_split
from halo_bench.data.synthetic import write_cifar_archive
from halo_bench.detectors import DETECTORS, DetectorContext
from halo_bench.features.passes import forward_pass
from halo_bench.models.checkpoint import load_checkpoint
from halo_bench.train.loop import TrainConfig, train

SETTINGS = {  # name: (pipeline, amp, channels_last, compile)
    "loader-fp32": ("loader", False, False, False),
    "device-fp32": ("device", False, False, False),
    "device-bf16": ("device", True, False, False),
    "device-bf16-cl": ("device", True, True, False),
    "device-bf16-cl-compile": ("device", True, True, True),
    "loader-bf16-cl": ("loader", True, True, False),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(device: torch.device, work) -> float:
    _sync(device)
    started = time.perf_counter()
    work()
    _sync(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="timm name (resnet18 builds resnet18_cifar)")
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is timed (the first warms up)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch (the suite's recipe: 128)")
    parser.add_argument("--eval-batch-size", type=int, default=1024)
    parser.add_argument("--losses", default="cce,halo")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {', '.join(SETTINGS)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: up to 8)")
    parser.add_argument("--no-odin", action="store_true", help="skip ODIN (two passes with gradients)")
    parser.add_argument("--workdir", default=None, help="keep the data and runs here (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r}; known: {', '.join(SETTINGS)}")

    tv_cifar.check_integrity = lambda *a, **k: True  # random bytes: skip only the md5 check
    registry = load_registry()
    config = registry.suite("cifar10").data_config
    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        started = time.perf_counter()
        write_cifar_archive(work / "data" / "cifar10", "cifar10", args.n_train, args.n_test)
        print(f"wrote {args.n_train} + {args.n_test} CIFAR-format images in {time.perf_counter() - started:.1f}s")
        test = load_split(registry.dataset("cifar10"), "test", config, LoadOptions(work / "data"))
        for setting in settings:
            pipeline, amp, channels_last, compile_ = SETTINGS[setting]
            for loss in args.losses.split(","):
                cfg = TrainConfig(model=args.model, loss=loss, suite="cifar10", epochs=args.epochs,
                                  batch_size=args.batch_size, device=args.device, amp=amp,
                                  channels_last=channels_last, compile=compile_, num_workers=args.num_workers,
                                  data_pipeline=pipeline, out=str(work / "runs" / setting),
                                  data_root=str(work / "data"))
                result = train(cfg, registry, force=True)
                history = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
                meta = json.loads((result.run_dir / "config.json").read_text())
                model, _ = load_checkpoint(result.checkpoint)
                model.to(device)
                memory_format = channels_last_format(device, channels_last)
                if memory_format is not None:
                    model.to(memory_format=memory_format)
                dtype = amp_dtype(device, amp)
                forward_pass(model, test, device, args.eval_batch_size, dtype, "warm-up", args.num_workers or 0,
                             show_progress=False, data_config=config, pipeline=pipeline, memory_format=memory_format)
                outputs = {}
                seconds = _timed(device, lambda: outputs.setdefault("x", forward_pass(
                    model, test, device, args.eval_batch_size, dtype, "forward", args.num_workers or 0,
                    show_progress=False, data_config=config, pipeline=pipeline, memory_format=memory_format)))
                odin = None
                if not args.no_odin:
                    ctx = DetectorContext(model=model, device=device, data_config=config,
                                          batch_size=args.eval_batch_size, num_workers=args.num_workers or 0,
                                          amp_dtype=dtype, pipeline=pipeline)
                    odin = round(args.n_test / _timed(device, lambda: DETECTORS["odin"]().score(ctx, outputs["x"],
                                                                                                test)))
                last = history[-1]
                rows.append({"setting": setting, "loss": loss, "arch": meta["model"]["arch"], "device": str(device),
                             "pipeline": meta["data_pipeline"], "autocast": meta["amp_dtype"] or "fp32",
                             "epoch_s": last["seconds"], "train_img_s": last["images_per_second"],
                             "forward_img_s": round(args.n_test / seconds), "odin_img_s": odin,
                             "train_acc": round(last["train_acc"], 1)})
                print(json.dumps(rows[-1]), flush=True)
    base = {row["setting"]: row["train_img_s"] for row in rows if row["loss"] == "cce"}
    table = [[r["setting"], r["loss"], r["pipeline"], r["autocast"], r["epoch_s"], r["train_img_s"],
              f"{100 * (r['train_img_s'] / base[r['setting']] - 1):+.1f}%" if r["setting"] in base else "",
              r["forward_img_s"], r["odin_img_s"] or "-", r["train_acc"]] for r in rows]
    print(tabulate(table, ["setting", "loss", "pipeline", "autocast", "epoch s", "train img/s", "vs CCE",
                           "forward img/s", "ODIN img/s", "train acc %"], tablefmt="github"))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{rows[0]['arch'] if rows else args.model}, {args.n_train} train / {args.n_test} test images, "
          f"batch {args.batch_size} (eval {args.eval_batch_size}), epochs {args.epochs} (last timed), {gpu}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
