"""The PyTorch transfer-learning tutorial's recipe, as the benchmarks' baseline.

A faithful port of https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html:
``ImageFolder`` + PIL transforms run on every image in every epoch, ``DataLoader`` with
batch size 4 and 4 workers, float32, SGD (lr 0.001, momentum 0.9) and ``StepLR(7, 0.1)``,
``model.train()`` / ``model.eval()`` per phase. Two changes: the transforms use the
backbone's own input size and normalisation (the tutorial's are ResNet's), and the best
weights are not copied at the end (it does not change the timing that matters).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets as tv_datasets
from torchvision import transforms


def dataloaders(data_dir: Path, pre, batch_size: int = 4, num_workers: int = 4, seed: int = 0):
    """The tutorial's train/val ImageFolder loaders (``pre``: the backbone's Preprocessing)."""
    mode = transforms.InterpolationMode(pre.interpolation)
    data_transforms = {
        "train": transforms.Compose([
            transforms.RandomResizedCrop(pre.size, interpolation=mode),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]),
        "val": transforms.Compose([
            transforms.Resize(pre.resize, interpolation=mode),
            transforms.CenterCrop(pre.size),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]),
    }
    image_datasets = {x: tv_datasets.ImageFolder(Path(data_dir) / x, data_transforms[x]) for x in ["train", "val"]}
    g = torch.Generator().manual_seed(seed)
    return {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=batch_size, shuffle=True,
                                           num_workers=num_workers, generator=g)
            for x in ["train", "val"]}


def train_model(model: nn.Module, loaders, optimizer, scheduler, num_epochs: int, device: torch.device):
    """The tutorial's ``train_model`` loop; returns per epoch (seconds, val accuracy, seconds in the train phase)."""
    criterion = nn.CrossEntropyLoss()
    epochs = []
    for epoch in range(num_epochs):
        t0 = time.perf_counter()
        val_acc = 0.0
        for phase in ["train", "val"]:
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss, running_corrects, n = 0.0, 0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data).item()
                n += inputs.size(0)
            if phase == "train":
                scheduler.step()
                train_time = time.perf_counter() - t0
            else:
                val_acc = running_corrects / n
        if device.type == "cuda":
            torch.cuda.synchronize()
        epochs.append((time.perf_counter() - t0, val_acc, train_time))
        print(f"  tutorial epoch {epoch + 1}/{num_epochs}: {epochs[-1][0]:.1f}s, val acc {val_acc:.3f}", flush=True)
    return epochs
