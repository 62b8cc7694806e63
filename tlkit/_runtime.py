"""What every tlkit function that runs a model shares: device, precision, checks, hooks, prediction.

``fit``, ``evaluate``, ``predict_proba``, ``extract_features``, the advisor and the pictures
of ``tlkit.viz`` all use these helpers, so they follow one set of rules:

* **device**: ``device=None`` means ``tlkit.default_device()``; the model is moved there, in
  channels-last memory format;
* **precision**: bfloat16 autocast on a GPU, float32 on the CPU; CPU inference runs on chunks
  of ``CPU_CHUNK`` images;
* **datasets**: checked once, with messages that say what to pass instead (:func:`check_dataset`);
* **stage outputs**: read by forward hooks that can stop the forward pass early (:func:`capture`);

Example:
    >>> import torch
    >>> from tlkit import _runtime
    >>> _runtime.uses_amp(torch.device("cpu"))
    False
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from ._batches import Batches, gives_tensors
from .backbones import Preprocessing, backbone_info
from .devices import default_device
from .errors import ArgumentError, DatasetError
from .stages import head_path

from .stages import list_stages

__all__ = [
    "resolve_device", "uses_amp", "precision", "to_device", "device_of", "CPU_CHUNK", "chunks",
    "preprocessing_of", "stage_names", "eval_mode", "check_dataset", "check_head", "gives_tensors",
    "list_stages", "StopForward", "capture", "forward", "run_until", "predict_proba",
]


# ---------------------------------------------------------------------------
# Device and precision
# ---------------------------------------------------------------------------

def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; None means ``tlkit.default_device()``."""
    return default_device()[0] if device is None else torch.device(device)


def uses_amp(device: torch.device) -> bool:
    """bfloat16 autocast on a GPU; float32 on the CPU (bf16 there is slow on most CPUs)."""
    return device.type == "cuda"


def precision(device: torch.device) -> str:
    """How a model runs on ``device``, in words: ``"cpu (float32, channels-last)"``."""
    return f"{device.type} ({'bfloat16 autocast' if uses_amp(device) else 'float32'}, channels-last)"


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the model, in channels-last memory format (faster convolutions on GPUs and on CPUs)."""
    return model.to(device).to(memory_format=torch.channels_last)


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters are (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


CPU_CHUNK = 16
"""On the CPU, inference runs on chunks of this many images: faster per image than big batches."""


def chunks(x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The batch itself on a GPU; slices of ``CPU_CHUNK`` images on the CPU (inference only)."""
    return x.split(CPU_CHUNK) if device.type == "cpu" else (x,)


# ---------------------------------------------------------------------------
# What tlkit knows about a model
# ---------------------------------------------------------------------------

def preprocessing_of(model: nn.Module, required: bool = True) -> Preprocessing | None:
    """The backbone's :class:`tlkit.Preprocessing` (``required=False``: None for a model tlkit did not load)."""
    if not required and getattr(model, "tlkit_backbone", None) is None:
        return None
    return backbone_info(model).preprocessing


def stage_names(model: nn.Module) -> list[str]:
    """The model's stage names, in forward order (``tlkit.stages``)."""
    return [s.name for s in list_stages(model)]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the model in eval mode and put it back into the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------

def check_dataset(dataset: Any, what: str = "dataset", *, training: bool = False) -> None:
    """Raise a :class:`tlkit.DatasetError` that says what to do unless ``dataset`` can be used.

    A dataset needs ``classes`` and ``targets``, at least one image, and every label in
    ``0..len(classes) - 1``. With ``training=True`` it must also give raw images (PIL images
    or uint8 tensors): ``fit`` and ``lr_find`` do the preprocessing and augmentation
    themselves, and a dataset whose transform already normalised its images would be
    preprocessed twice.
    """
    for attr in ("classes", "targets"):
        if not hasattr(dataset, attr):
            raise ArgumentError(f"{what} must be a dataset with .classes and .targets (a tlkit ImageDataset or a "
                                f"torchvision ImageFolder), got {type(dataset).__name__}. Load one with "
                                "tlkit.datasets.load(...).")
    if len(dataset) == 0:
        raise DatasetError(f"{what} is empty: it has no images. Check the folder and the split.")
    n = len(dataset.classes)
    bad = sorted({int(t) for t in dataset.targets if not 0 <= int(t) < n})
    if bad:
        raise DatasetError(f"{what} has labels {bad[:5]} outside 0..{n - 1} (it has {n} classes: "
                           f"{list(dataset.classes)[:5]}{'...' if n > 5 else ''}). Every label must be the index of "
                           "a class; remove or relabel those images (-100, PyTorch's 'ignore', is not supported).")
    if training and gives_tensors(dataset):
        raise DatasetError(
            f"{what} gives float tensors (its transform, e.g. tlkit.preprocess(model), already normalised the "
            "images), but training does its own preprocessing and augmentation on raw images, so they would be "
            "preprocessed twice. Pass the dataset without a transform (tlkit.datasets.load(root), or "
            "ImageFolder(root) with transform=None) and choose augmentation with augment=...")


def check_head(model: nn.Module, classes: list[str]) -> None:
    """The model's head must have one output per class."""
    head = model.get_submodule(head_path(model))
    outputs = getattr(head, "out_features", None)
    if outputs is not None and outputs != len(classes):
        raise ArgumentError(f"the model's head has {outputs} outputs, the dataset has {len(classes)} classes "
                            f"({', '.join(map(str, list(classes)[:5]))}{'...' if len(classes) > 5 else ''}): "
                            f"call tlkit.replace_head(model, {len(classes)}) first.")


# ---------------------------------------------------------------------------
# Reading what modules compute, by forward hooks
# ---------------------------------------------------------------------------

class StopForward(Exception):
    """Raised by a hook of :func:`capture` once every wanted module has run: the rest is skipped."""


@contextmanager
def capture(modules: Mapping[str, nn.Module], *, inputs: bool = False, stop: bool = False,
            keep: Callable[[torch.Tensor], Any] = lambda t: t) -> Iterator[dict[str, list]]:
    """Forward hooks on ``modules`` while the block runs; yields ``{name: [kept value per forward]}``.

    ``inputs=True`` keeps what each module reads (its first argument) instead of what it
    returns. ``stop=True`` ends each forward pass (:class:`StopForward`, caught by
    :func:`forward`) once every module has been seen, so an early stage costs only the layers
    before it. ``keep`` turns each tensor into what is stored (e.g. a pooled copy on the CPU).

    >>> with capture({"blocks.2": model.get_submodule("blocks.2")}, stop=True) as seen:  # doctest: +SKIP
    ...     forward(model, x)
    """
    seen: dict[str, list] = {name: [] for name in modules}
    fired: set[str] = set()

    def hook(name: str):
        def save(module, args, output=None):
            seen[name].append(keep(args[0] if inputs else output))
            fired.add(name)
            if len(fired) == len(modules):
                fired.clear()
                if stop:
                    raise StopForward
        return save

    handles = [m.register_forward_pre_hook(hook(n)) if inputs else m.register_forward_hook(hook(n))
               for n, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``model(x)``, or None when a :func:`capture` hook stopped the pass early."""
    try:
        return model(x)
    except StopForward:
        return None


def run_until(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor, *, stop: bool = True):
    """Forward ``x`` and return ``({name: output}, model_output_or_None)`` for the given modules."""
    with capture(modules, stop=stop) as seen:
        result = forward(model, x)
    missing = sorted(n for n, v in seen.items() if not v)
    if missing:
        raise RuntimeError(f"the forward pass never ran {missing}; is it part of this model's forward()?")
    return {n: v[-1] for n, v in seen.items()}, result


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------

@torch.no_grad()
def predict_proba(model: nn.Module, dataset: Any, batch_size: int = 64, device: str | torch.device | None = None,
                  *, progress: bool = True) -> torch.Tensor:
    """Class probabilities for every image of ``dataset``, in order: float (N, num_classes) on the CPU.

    The one prediction path of tlkit (``tlkit.predict_proba`` and ``tlkit.viz``'s pictures):
    the backbone's eval preprocessing on raw images, or the dataset's own tensors as they are
    when its transform already made them; the model moves to ``device`` (default
    ``tlkit.default_device()``), bfloat16 autocast on a GPU.
    """
    check_dataset(dataset, "dataset")
    device = resolve_device(device)
    to_device(model, device)
    batches = Batches(dataset, preprocessing_of(model, required=not gives_tensors(dataset)),
                      batch_size=batch_size, device=device, progress=progress)
    out = []
    with eval_mode(model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_amp(device)):
        for x, _ in batches:
            out.append(torch.cat([model(c) for c in chunks(x, device)]).float().softmax(1).cpu())
    return torch.cat(out)
