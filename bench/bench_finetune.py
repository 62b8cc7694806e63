"""Fine-tuning: the PyTorch tutorial's recipe vs tlkit.fit, same data, backbone and epochs.

Both sides fine-tune the whole network (every stage trainable) from the same ImageNet
weights on hymenoptera (244 train / 153 val images), in one process:

* tutorial: ImageFolder + PIL transforms every epoch, batch 4, float32, SGD lr 0.001
  momentum 0.9, StepLR(7, 0.1) (bench/tutorial.py);
* tlkit: ``tlkit.fit(model, train, val, epochs)`` with its defaults: images decoded once and
  kept as uint8 tensors, augmentation and normalisation on whole batches on the device,
  batch 32, AdamW with per-stage learning rates; bfloat16 + channels-last on a GPU.

On a GPU it also measures the model's synthetic peak training throughput (a random uint8
batch already on the device, same batch size, bfloat16 + channels-last, steady state) and
prints tlkit's training throughput as a percentage of it.

Usage:
    TLKIT_MIRROR=/path/to/shared/datasets python bench/bench_finetune.py --epochs 3
    python bench/bench_finetune.py --backbone efficientnet_lite2 --epochs 5 --device cuda
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's tlkit, not an installed one
import tlkit  # noqa: E402
from tlkit import datasets  # noqa: E402

import tutorial  # noqa: E402


def synthetic_peak(backbone: str, batch_size: int, device: torch.device, steps: int = 30, warmup: int = 10) -> float:
    """Images per second of plain training steps on a random batch already on the device."""
    model = tlkit.load_backbone(backbone, num_classes=2).to(device).to(memory_format=torch.channels_last)
    pre = model.tlkit_backbone.preprocessing
    optimizer = torch.optim.AdamW(tlkit.param_groups(model, 1e-3))
    x = torch.randint(0, 256, (batch_size, 3, pre.size, pre.size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)
    torch.backends.cudnn.benchmark = True
    model.train()

    def step():
        xf = ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(xf)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="tlkit's batch size (the tutorial's is 4)")
    parser.add_argument("--lr", type=float, default=1e-3, help="tlkit's head learning rate")
    parser.add_argument("--workers", type=int, default=4, help="the tutorial's DataLoader workers")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default=None, help="default: tlkit.default_device()")
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else tlkit.default_device()[0]
    train = datasets.load("hymenoptera", "train", progress=False)
    val = datasets.load("hymenoptera", "val", progress=False)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    load = " (load average %.1f)" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"fine-tuning {args.backbone} on hymenoptera ({len(train)} train / {len(val)} val), {args.epochs} epochs, "
          f"on {where}{load}", flush=True)

    rows = []
    tut_epochs = []
    if not args.skip_tutorial:
        print("tutorial recipe:", flush=True)
        torch.manual_seed(0)
        model = tlkit.load_backbone(args.backbone, num_classes=2).to(device)
        loaders = tutorial.dataloaders(train.root.parent, model.tlkit_backbone.preprocessing,
                                       num_workers=args.workers)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
        t0 = time.perf_counter()
        tut_epochs = tutorial.train_model(model, loaders, optimizer, scheduler, args.epochs, device)
        tut_total = time.perf_counter() - t0
        del model, optimizer

    print("tlkit.fit:", flush=True)
    tlkit.train.clear_cache()  # include decoding in the measurement
    model = tlkit.load_backbone(args.backbone, num_classes=2)
    t0 = time.perf_counter()
    history = tlkit.fit(model, train, val, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        device=device, label="tlkit")
    tl_total = time.perf_counter() - t0

    steady = history.epoch_time[1:] or history.epoch_time
    rows.append(("epoch times (s)", ", ".join(f"{e[0]:.1f}" for e in tut_epochs) or "-",
                 ", ".join(f"{t:.1f}" for t in history.epoch_time)))
    if tut_epochs:
        tut_steady = [e[0] for e in tut_epochs][1:] or [e[0] for e in tut_epochs]
        tut_train = [e[2] for e in tut_epochs][1:] or [e[2] for e in tut_epochs]
        rows.append(("median epoch, after the first (s)", f"{statistics.median(tut_steady):.1f}",
                     f"{statistics.median(steady):.1f}"))
        rows.append(("total wall time (s)", f"{tut_total:.1f}", f"{tl_total:.1f} (setup {history.setup_time:.1f})"))
        rows.append(("val accuracy after last epoch", f"{tut_epochs[-1][1]:.3f}", f"{history.val_acc[-1]:.3f}"))
    else:
        rows.append(("median epoch, after the first (s)", "-", f"{statistics.median(steady):.1f}"))
        rows.append(("total wall time (s)", "-", f"{tl_total:.1f} (setup {history.setup_time:.1f})"))
        rows.append(("val accuracy after last epoch", "-", f"{history.val_acc[-1]:.3f}"))
    train_steady = history.train_time[1:] or history.train_time
    tl_rate = history.images_per_epoch / statistics.median(train_steady)
    tut_rate = f"{len(train) / statistics.median(tut_train):.1f}" if tut_epochs else "-"
    rows.append(("training images per epoch", str(len(train)) if tut_epochs else "-",
                 f"{history.images_per_epoch} (ragged last batch dropped)"))
    rows.append(("training throughput, median after the first epoch (img/s)", tut_rate, f"{tl_rate:.1f}"))
    if device.type == "cuda":
        peak = synthetic_peak(args.backbone, args.batch_size, device)
        rows.append(("synthetic peak, same batch (img/s)", "-", f"{peak:.0f}"))
        rows.append(("tlkit throughput, % of peak", "-", f"{100 * tl_rate / peak:.0f}%"))

    print()
    print(f"| fine-tune, {args.epochs} epochs, {args.backbone}, {where} | tutorial | tlkit |")
    print("|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")
    if tut_epochs:
        ratio = statistics.median(tut_steady) / statistics.median(steady)
        print(f"\nepoch-time ratio (tutorial / tlkit, median after the first epoch): {ratio:.2f}x; "
              f"total wall time ratio: {tut_total / tl_total:.2f}x")


if __name__ == "__main__":
    main()
