"""How fast halo-bench runs the whole detector field, against its floor and against pytorch-ood.

On one CCE model and CIFAR-format data (random images in the real archive layout, written by
`halo_bench.data.synthetic.write_cifar_archive`: CIFAR-10 as ID, CIFAR-100 as the OOD set),
prints the wall time of

1. `halo-bench eval` with every detector, cold (empty feature cache), and again warm; with
   `--loader-too` also cold with `--data-pipeline loader` (the PIL DataLoader, which `auto` used
   on the CPU before evaluation served in-memory sets as tensors there too), side by side;
2. the bare cost: one forward pass over every split it reads (ID test, OOD test, ID train) plus
   ODIN's gradient passes over the test splits, on the images already in memory as tensors (no
   PIL), the least any evaluation of ODIN can run;
3. pytorch-ood 0.4 running the same detectors its users' way: each detector fitted with
   `fit(train_loader)` and scored with `predict(x)` batch by batch, so each runs the model itself
   (`--no-pytorch-ood` leaves it out).

Goal: (1, cold) <= 1.1 x (2), and >= 3 x faster than (3). With `--repeat N` every measurement
runs N times and the fastest counts (the usual defence against a busy machine; a cold run
deletes the feature cache first).

    python benchmarks/eval_speed.py                                  # 5,000 train / 2,000 + 2,000 test
    python benchmarks/eval_speed.py --n-train 50000 --n-test 10000 --device cuda
    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --n-train 1000 --n-test 500 --loader-too --no-pytorch-ood
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torchvision.datasets.cifar as tv_cifar
from tabulate import tabulate
from torch.utils.data import DataLoader

from halo_bench.core.devices import amp_dtype, resolve_device
from halo_bench.data import LoadOptions, load_registry, load_split
from halo_bench.data.synthetic import write_cifar_archive
from halo_bench.detectors import DETECTORS, DetectorContext
from halo_bench.evaluate.run import EvalConfig, evaluate
from halo_bench.features.cache import CACHE_DIR
from halo_bench.features.passes import forward_pass
from halo_bench.models.checkpoint import load_checkpoint
from halo_bench.results import SCORES_FILE
from halo_bench.train.loop import TrainConfig, train

CCE_DETECTORS = [name for name, cls in DETECTORS.items() if not cls.halo_only]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


def pytorch_ood_way(model, meta, loaders: dict[str, DataLoader], train_loader: DataLoader,
                    device: torch.device) -> dict[str, float]:
    """Every detector as pytorch-ood's documentation uses it: its own fit and predict passes."""
    from pytorch_ood.detector import (
        ASH,
        GEN,
        KNN,
        ODIN,
        RMD,
        EnergyBased,
        Mahalanobis,
        MaxLogit,
        MaxSoftmax,
        ReAct,
        ViM,
    )

    k = model.num_classes
    fc, embed = model.head.fc, model.embed
    w = (fc.weight @ embed.weight).detach()
    b = (fc.weight @ embed.bias + fc.bias).detach()
    tail = model.logits_from_penultimate  # penultimate features -> logits, for ReAct and ASH
    std = list(meta["data_config"]["std"])
    makers = {
        "msp": lambda: MaxSoftmax(model),
        "maxlogit": lambda: MaxLogit(model),
        "energy": lambda: EnergyBased(model),
        "odin": lambda: ODIN(model, eps=0.0014, temperature=1000.0, norm_std=std),
        "mahalanobis": lambda: Mahalanobis(model.forward_features),
        "gen": lambda: GEN(model, gamma=0.1, M=min(100, k)),
        "knn": lambda: KNN(model.backbone, k=50),
        "vim": lambda: ViM(model.backbone, d=min(256, model.embed.in_features // 2), w=w, b=b),
        "react": lambda: ReAct(model.backbone, tail, percentile=0.9),
        "ash": lambda: ASH(lambda x: model.backbone(x)[:, :, None, None], lambda h: tail(h.flatten(1)),
                           variant="ash-s", percentile=0.9),
        "mds": lambda: Mahalanobis(model.backbone),
        "rmds": lambda: RMD(model.backbone),
    }
    out = {}
    for name in CCE_DETECTORS:
        def run(name=name):
            det = makers[name]()
            if hasattr(det, "to"):
                det.to(device)
            if det.requires_fit if hasattr(det, "requires_fit") else False:
                det.fit(train_loader)
            for loader in loaders.values():
                for x, _ in loader:
                    det.predict(x.to(device))
        with torch.no_grad() if name != "odin" else torch.enable_grad():
            out[name] = _timed(run, device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="timm name (resnet18 builds resnet18_cifar)")
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=2000, help="images in the ID test set and in the OOD set")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=1, help="time each measurement this many times, keep the fastest")
    parser.add_argument("--workdir", default=None, help="keep the data and runs here (default: a temp dir)")
    parser.add_argument("--loader-too", action="store_true",
                        help="also time a cold eval with --data-pipeline loader (the PIL DataLoader)")
    parser.add_argument("--no-pytorch-ood", action="store_true", help="skip the pytorch-ood comparison")
    args = parser.parse_args()
    os.environ.setdefault("HALO_BENCH_PROGRESS", "0")

    tv_cifar.check_integrity = lambda *a, **k: True  # random bytes: skip only the md5 check
    registry = load_registry()
    suite = registry.suite("cifar10")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        data = work / "data"
        write_cifar_archive(data / "cifar10", "cifar10", args.n_train, args.n_test)
        write_cifar_archive(data / "cifar100", "cifar100", 100, args.n_test, seed=1)
        run = train(TrainConfig(model=args.model, loss="cce", suite="cifar10", epochs=1, batch_size=128,
                                device=args.device, out=str(work / "runs"), data_root=str(data)), registry)
        model, meta = load_checkpoint(run.checkpoint)

        def halo_bench_eval(cache: bool, out: str, pipeline: str = "auto") -> dict:
            cfg = EvalConfig(checkpoint=str(run.checkpoint), ood=["cifar100"], detectors=CCE_DETECTORS,
                             out=str(work / out), device=args.device, batch_size=args.batch_size,
                             data_root=str(data), num_workers=0, cache=cache, data_pipeline=pipeline)
            return evaluate(cfg, registry)[0]

        device = resolve_device(args.device)
        dtype = amp_dtype(device, True)  # what evaluate runs in (EvalConfig's default amp)
        model.to(device).eval()
        options = LoadOptions(data)
        splits = {"cifar10 test": load_split(registry.dataset("cifar10"), "test", suite.data_config, options),
                  "cifar100 test": load_split(registry.dataset("cifar100"), "test", suite.data_config, options)}
        train_ds = load_split(registry.dataset("cifar10"), "train", suite.data_config, options)
        # The bare cost reads the images as tensors (the device pipeline, forced): the model's cost, no PIL.
        ctx = DetectorContext(model=model, device=device, data_config=suite.data_config,
                              batch_size=args.batch_size, amp_dtype=dtype, pipeline="device")
        odin = DETECTORS["odin"]()
        bare: dict[str, float] = {}
        outputs = {}

        t_cold = t_warm = t_loader = float("inf")
        loader_res: dict | None = None
        # Every repeat times each run once, in turn, so a busy spell on a shared machine slows one
        # repeat of every measurement rather than every repeat of one.
        for _ in range(args.repeat):
            if args.loader_too:
                shutil.rmtree(run.checkpoint.parent / CACHE_DIR, ignore_errors=True)
                started = time.perf_counter()
                res = halo_bench_eval(True, "eval-cold-loader", "loader")
                if time.perf_counter() - started < t_loader:
                    t_loader, loader_res = time.perf_counter() - started, res
            shutil.rmtree(run.checkpoint.parent / CACHE_DIR, ignore_errors=True)
            started = time.perf_counter()
            res = halo_bench_eval(True, "eval-cold")
            if time.perf_counter() - started < t_cold:
                t_cold, cold = time.perf_counter() - started, res
            started = time.perf_counter()
            res = halo_bench_eval(True, "eval-warm")
            if time.perf_counter() - started < t_warm:
                t_warm, warm = time.perf_counter() - started, res
            for name, ds in [*splits.items(), ("cifar10 train", train_ds)]:
                seconds = _timed(lambda ds=ds, name=name: outputs.__setitem__(
                    name, forward_pass(model, ds, device, args.batch_size, dtype, show_progress=False,
                                       data_config=suite.data_config, pipeline="device")), device)
                bare[f"forward {name}"] = min(seconds, bare.get(f"forward {name}", float("inf")))
            seconds = sum(_timed(lambda ds=ds, name=name: odin.score(ctx, outputs[name], ds), device)
                          for name, ds in splits.items())
            bare["ODIN passes"] = min(seconds, bare.get("ODIN passes", float("inf")))
        same_scores = args.loader_too and ((work / "eval-cold-loader" / SCORES_FILE).read_bytes()
                                           == (work / "eval-cold" / SCORES_FILE).read_bytes())
        t_bare = sum(bare.values())

        loaders = {name: DataLoader(ds, batch_size=args.batch_size) for name, ds in splits.items()}
        per_detector: dict[str, float] = {}
        for _ in range(0 if args.no_pytorch_ood else args.repeat):
            times = pytorch_ood_way(model, meta, loaders, DataLoader(train_ds, batch_size=args.batch_size), device)
            per_detector = {k: min(v, per_detector.get(k, float("inf"))) for k, v in times.items()}
        t_ood = sum(per_detector.values())

    n_images = 2 * args.n_test + args.n_train
    print(f"{args.model} (CCE), {device}, autocast {cold['eval_config']['amp_dtype'] or 'fp32'}, "
          f"{args.n_train} train + {args.n_test} ID test + {args.n_test} OOD test images, "
          f"{len(CCE_DETECTORS)} detectors: {', '.join(CCE_DETECTORS)}; torch {torch.__version__}")
    rows = [
        ["halo-bench eval, every detector, cold cache", f"{t_cold:.1f}", f"{t_cold / t_bare:.2f}", "1.00"],
        ["halo-bench eval, every detector, warm cache", f"{t_warm:.1f}", f"{t_warm / t_bare:.2f}",
         f"{t_warm / t_cold:.2f}"],
        [f"bare cost: one pass over {n_images} images + ODIN's passes", f"{t_bare:.1f}", "1.00",
         f"{t_bare / t_cold:.2f}"],
    ]
    if loader_res is not None:
        rows.insert(1, ["halo-bench eval, cold cache, --data-pipeline loader (PIL)", f"{t_loader:.1f}",
                        f"{t_loader / t_bare:.2f}", f"{t_loader / t_cold:.2f}"])
    if per_detector:
        rows.append(["pytorch-ood 0.4, its users' way", f"{t_ood:.1f}", f"{t_ood / t_bare:.2f}",
                     f"{t_ood / t_cold:.2f}"])
    print(tabulate(rows, ["run", "seconds", "x bare cost", "x halo-bench cold"], tablefmt="github"))
    print()
    print(tabulate([[name, f"{per_detector[name]:.1f}" if name in per_detector else "-",
                     f"{cold['timing_seconds'].get(f'detector_{name}', 0.0):.2f}"] for name in CCE_DETECTORS],
                   ["detector", "pytorch-ood s (fit + predict)", "halo-bench s (on cached features)"],
                   tablefmt="github"))
    print("bare cost: " + ", ".join(f"{k} {v:.1f}s" for k, v in bare.items()))
    print(f"halo-bench cold: forward passes {cold['timing_seconds']['forward_passes']:.1f}s, "
          f"ODIN {cold['timing_seconds']['detector_odin']:.1f}s; warm: forward passes "
          f"{warm['timing_seconds']['forward_passes']:.1f}s (cache read: {', '.join(warm['feature_cache']['read'])}), "
          f"ODIN {warm['timing_seconds']['detector_odin']:.1f}s; repeats {args.repeat} (fastest kept)")
    if loader_res is not None:
        print(f"--data-pipeline loader: forward passes {loader_res['timing_seconds']['forward_passes']:.1f}s, "
              f"ODIN {loader_res['timing_seconds']['detector_odin']:.1f}s; its scores.csv.gz is "
              f"{'byte-identical to' if same_scores else 'NOT identical to'} auto's")


if __name__ == "__main__":
    main()
