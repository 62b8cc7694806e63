"""Frozen backbone: the tutorial's "fixed feature extractor" vs extracting features once.

* tutorial: every parameter frozen except a new head, but the whole network still runs on
  every (freshly augmented) image in every epoch, 25 epochs, batch 4, float32, SGD lr 0.001
  momentum 0.9, StepLR(7, 0.1), ``model.train()`` during training (bench/tutorial.py). Note
  that in train mode its "frozen" BatchNorm layers still update their running statistics.
* tlkit: ``extract_features`` once for train and val (eval preprocessing, no augmentation;
  the cache is cleared first so extraction is measured), then ``train_head`` for 25 epochs
  on the cached features, and the ``linear_probe`` baseline.

Running all 25 tutorial epochs on a small CPU takes a while: ``--tutorial-epochs N`` runs
only N of them and then extrapolates the 25-epoch time from the median epoch, which the
output says clearly.

Usage:
    TLKIT_MIRROR=/path/to/shared/datasets python bench/bench_features.py
    python bench/bench_features.py --tutorial-epochs 5 --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's tlkit, not an installed one
import tlkit  # noqa: E402
from tlkit import datasets  # noqa: E402
from tlkit.stages import head_path  # noqa: E402

import tutorial  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=25, help="epochs of both heads (the tutorial's: 25)")
    parser.add_argument("--tutorial-epochs", type=int, default=None,
                        help="tutorial epochs actually run (default: --epochs); the rest is extrapolated")
    parser.add_argument("--workers", type=int, default=4, help="the tutorial's DataLoader workers")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default=None, help="default: tlkit.default_device()")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else tlkit.default_device()[0]
    run_epochs = min(args.tutorial_epochs or args.epochs, args.epochs)
    train = datasets.load("hymenoptera", "train", progress=False)
    val = datasets.load("hymenoptera", "val", progress=False)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    load = " (load average %.1f)" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"frozen {args.backbone} + linear head on hymenoptera ({len(train)} train / {len(val)} val), "
          f"{args.epochs} epochs, on {where}{load}", flush=True)

    print(f"tutorial recipe ({run_epochs} of {args.epochs} epochs run):", flush=True)
    torch.manual_seed(0)
    model = tlkit.load_backbone(args.backbone, num_classes=2).to(device)
    for p in model.parameters():
        p.requires_grad = False
    head = model.get_submodule(head_path(model))
    for p in head.parameters():
        p.requires_grad = True
    loaders = tutorial.dataloaders(train.root.parent, model.tlkit_backbone.preprocessing, num_workers=args.workers)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    t0 = time.perf_counter()
    tut_epochs = tutorial.train_model(model, loaders, optimizer, scheduler, run_epochs, device)
    tut_measured = time.perf_counter() - t0
    extrapolated = run_epochs < args.epochs
    tut_total = (tut_measured + statistics.median(e[0] for e in tut_epochs) * (args.epochs - run_epochs)
                 if extrapolated else tut_measured)
    del model, optimizer

    print("tlkit: extract once, then train a linear head:", flush=True)
    os.environ["TLKIT_CACHE"] = tempfile.mkdtemp(prefix="tlkit-bench-")  # an empty feature cache
    tlkit.train.clear_cache()
    model = tlkit.load_backbone(args.backbone, num_classes=2)
    t0 = time.perf_counter()
    ftrain = tlkit.extract_features(model, train, device=device)
    fval = tlkit.extract_features(model, val, device=device)
    t_extract = time.perf_counter() - t0
    t1 = time.perf_counter()
    history = tlkit.train_head(ftrain, fval, epochs=args.epochs)
    t_head = time.perf_counter() - t1
    tl_total = time.perf_counter() - t0
    t2 = time.perf_counter()
    probe = tlkit.linear_probe(ftrain, fval)
    t_probe = time.perf_counter() - t2
    t3 = time.perf_counter()
    tlkit.extract_features(model, train, device=device)
    tlkit.extract_features(model, val, device=device)
    t_cached = time.perf_counter() - t3

    tut_label = f"{tut_total:.1f}" + (f" (extrapolated from {run_epochs} measured epochs: {tut_measured:.1f})"
                                      if extrapolated else "")
    rows = [
        ("per-epoch times (s)", ", ".join(f"{e[0]:.1f}" for e in tut_epochs),
         f"{statistics.median(history.epoch_time) * 1000:.1f} ms median"),
        ("feature extraction, once (s)", "-", f"{t_extract:.1f}"),
        (f"total for {args.epochs} epochs (s)", tut_label, f"{tl_total:.1f}"),
        ("val accuracy after last epoch", f"{tut_epochs[-1][1]:.3f}" + (f" (after {run_epochs})" if extrapolated else ""),
         f"{history.val_acc[-1]:.3f}"),
        ("linear_probe (logistic regression) accuracy / time", "-", f"{probe.accuracy:.3f} / {t_probe:.2f}s"),
        ("features again, from the cache (s)", "-", f"{t_cached:.3f}"),
    ]
    print()
    print(f"| frozen {args.backbone}, {args.epochs} epochs, {where} | tutorial | tlkit |")
    print("|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")
    print(f"\nspeed-up (tutorial total / tlkit total): {tut_total / tl_total:.1f}x"
          + (" (tutorial time partly extrapolated)" if extrapolated else ""))


if __name__ == "__main__":
    main()
