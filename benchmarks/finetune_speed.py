"""Seconds per epoch of full training, full fine-tuning and head-only training on cached features.

    python benchmarks/finetune_speed.py [--model resnet18] [--suite digits] [--epochs 2] [--img-size 32]
                                        [--device cpu] [--loss halo]

Same model, same data, same recipe: (1) from random weights, (2) full fine-tuning from a weights
file (written here from a freshly initialised model: the speed does not depend on the values),
(3) `--freeze-backbone`: the backbone runs once per split (reported separately as the feature
cache) and each epoch trains only the embedding and head. An epoch's seconds are the training
pass alone, as metrics.jsonl records them; the best epoch is shown (the first warms up).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="timm model name.")
    parser.add_argument("--suite", default="digits", help="Suite (its ID train set is the data).")
    parser.add_argument("--epochs", type=int, default=2, help="Epochs per mode (the fastest is reported).")
    parser.add_argument("--img-size", type=int, default=32, help="Input height = width (the suite's data resized).")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--loss", default="halo", help="Loss of every run.")
    args = parser.parse_args()

    import timm
    import torch

    from halo_bench.data import load_registry
    from halo_bench.train.loop import TrainConfig, train

    registry = load_registry()
    channels = registry.suite(args.suite).data_config["input_size"][0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pth"
        torch.save(timm.create_model(args.model, in_chans=channels).state_dict(), weights)
        common = dict(model=args.model, loss=args.loss, suite=args.suite, epochs=args.epochs, device=args.device,
                      img_size=args.img_size, out=str(Path(tmp) / "runs"))
        modes = {
            "full training (random init)": {},
            "full fine-tuning (--init-from, backbone lr x0.1)": {"init_from": str(weights)},
            "head only on cached features (--freeze-backbone)": {"init_from": str(weights),
                                                                 "freeze_backbone": True},
        }
        for name, extra in modes.items():
            started = time.perf_counter()
            result = train(TrainConfig(**common, **extra), registry, force=True)
            total = time.perf_counter() - started
            history = [__import__("json").loads(line) for line in
                       (result.run_dir / "metrics.jsonl").read_text().splitlines()]
            rows.append((name, min(r["seconds"] for r in history), total))
    base = rows[0][1]
    print(f"\n{args.model} on {args.suite} ({args.img_size}x{args.img_size}), loss {args.loss}, "
          f"device {args.device}, best of {args.epochs} epochs")
    print("| mode | s / epoch | vs full training | whole run incl. setup and test passes (s) |\n|---|---|---|---|")
    for name, seconds, total in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / base:.3f}x | {total:.1f} |")


if __name__ == "__main__":
    main()
