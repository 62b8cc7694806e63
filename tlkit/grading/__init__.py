"""Checks for exercise cells: specific feedback when an answer is wrong, a short ✓ when it is right.

Each ``check_*`` function either prints one confirmation line starting with ``✓`` or
raises :class:`CheckFailed` (a subclass of ``AssertionError``, so nbgrader scores the
test cell as failed) whose message names the mistake without giving the answer away.

Two kinds of checks:

* structural, on what the learner built: :func:`check_head`, :func:`check_frozen`,
  :func:`check_optimizer`, :func:`check_normalization`;
* behavioural, on what it does: :func:`check_training_step` (one step moves exactly what
  should move), :func:`check_features` (same features as a reference), :func:`check_lr`
  (a learning rate the LR finder's curve supports).

A blank answer never passes: ``None``, ``NotImplemented``, ``...``, a function that still
raises ``NotImplementedError`` and an untouched model (ImageNet head, nothing frozen) all
fail with a message that says "not written yet" or what is missing. The checks leave the
model as they found it (parameters, BatchNorm statistics, gradients, train/eval mode).

A ✓ means full marks: a lesson's visible test checks every requirement its exercise
states (pass ``lr=`` and ``kind=`` to :func:`check_optimizer` when the exercise names a
rate and an optimizer). The hidden tests only re-verify.

Grades that cannot be faked, and their limits. These checks run in the learner's kernel,
so a cell can replace them (``tlkit.grading.check_frozen = ...``). They are written so the
usual ways of switching them off do nothing (they ``raise CheckFailed`` directly, so
replacing a helper such as ``_fail`` changes nothing; a frozen model must really compute the
same features after ``model.train()``, a training step must really produce the loss's
gradients, a finder result must really be an ``LRFinderResult``, and the learner's feature
extractor runs before the reference features exist, so they cannot be read from a frame).
The *authoritative* result is the hidden test, which does not call this module at all: it
loads a fresh, private copy of :mod:`tlkit.grading.verify` from its file (not through
``sys.modules``) and re-verifies on the real objects against values it states itself. No
in-kernel check can be perfectly tamper-proof: code that patches torch, the import
system or files on disk can still fool it; the second layer is a static scan of each
submission for such tampering (``tlkit.classroom``), shown in the grade report.

This module is one file of about 800 lines on purpose: every check a lesson calls, with all
its feedback messages, is in one place a learner can open; the mechanism the hidden tests
share lives in ``verify.py``.

Example, in an nbgrader test cell:
    >>> import tlkit
    >>> from tlkit import grading
    >>> model = tlkit.load_backbone("efficientnet_lite0", pretrained=False)
    >>> grading.check_head(model, 2)
    Traceback (most recent call last):
    ...
    tlkit.grading.CheckFailed: your head has 1000 outputs, the dataset has 2 classes.
    >>> grading.check_head(tlkit.replace_head(model, 2), 2)
    ✓ head: 2 outputs for 2 classes
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from numbers import Real
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..backbones import IMAGENET_MEAN, IMAGENET_STD, backbone_info
from ..stages import get_stage, head_path, list_stages as stages
from ..errors import ArgumentError, CheckFailed, ClaimNotShown
from . import verify

__all__ = [
    "CheckFailed",
    "check_head",
    "check_frozen",
    "check_optimizer",
    "check_normalization",
    "check_training_step",
    "check_features",
    "check_lr",
    "lr_range",
    "ClaimNotShown",
    "check_claim",
    "CLAIM_SHOWN",
]

_BLANKS = (None, NotImplemented, Ellipsis)




CLAIM_SHOWN = "✓ shown on this run: "
"""How :func:`check_claim` starts the line it prints (tools such as bench/course_times.py read it)."""




def check_claim(holds: bool, claim: str, evidence: str = "") -> None:
    """State a lesson's claim next to the experiment that shows it, and check it on this run.

    Lessons say things like "the linear probe beats training from scratch". Right after the
    experiment, ``check_claim`` prints the claim with the measured ``evidence`` (the numbers
    and the margin), or raises :class:`ClaimNotShown` when this run did not show it, so that
    neither a learner nor the course's tests can read a story the numbers do not tell.

    >>> check_claim(0.92 > 0.55, "the linear probe beats training from scratch", "92% vs 55%")
    ✓ shown on this run: the linear probe beats training from scratch (92% vs 55%)
    """
    __tracebackhide__ = True
    detail = f" ({evidence})" if evidence else ""
    if not bool(holds):
        raise ClaimNotShown(
            f"not shown on this run: {claim}{detail}.\nThe lesson's text says this is what happens, and it was "
            "checked with several seeds, but this run did not show it. Results depend on the seed and on which "
            "images were drawn: if you changed SEED or the settings, that may be a real finding (say so in your "
            "answers); otherwise re-run the lesson from the top and tell your instructor.")
    print(f"{CLAIM_SHOWN}{claim}{detail}")


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _ok(message: str) -> None:
    print(f"✓ {message}")


def _require(value: Any, what: str, kind: type | tuple[type, ...] | None = None, hint: str = "") -> None:
    """Fail for blank answers (None, NotImplemented, ...) and for values of the wrong type."""
    __tracebackhide__ = True
    if any(value is blank for blank in _BLANKS):
        raise CheckFailed(f"{what} is {value!r}: not written yet. {hint}".strip())
    if kind is not None and not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CheckFailed(f"{what} should be a {names}, but it is a {type(value).__name__}. {hint}".strip())


def _call_answer(fn: Callable, *args: Any, what: str) -> Any:
    """Call the learner's function; turn its errors into feedback."""
    __tracebackhide__ = True
    try:
        return fn(*args)
    except NotImplementedError:
        raise CheckFailed(f"{what} is not written yet: it raises NotImplementedError. Replace the placeholder with your code.")
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _stage_names(stage_list: Sequence[str]) -> str:
    """'stem, blocks.0 … blocks.4' for long runs of stage names."""
    names = list(dict.fromkeys(stage_list))
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]}, {names[1]} … {names[-1]}"


def _param_stages(model: nn.Module) -> dict[str, str]:
    """Stage name of every named parameter and buffer (``"other"`` outside tlkit's stage map)."""
    try:
        prefixes = [(m, s.name) for s in stages(model) for m in s.modules]
    except Exception:  # a model tlkit cannot map: still give feedback, by module name
        prefixes = []
    owner = {}
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    for name in names:
        owner[name] = next((s for m, s in prefixes if name == m or name.startswith(m + ".")), "other")
    return owner


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def _untouched(*modules: nn.Module) -> Iterator[None]:
    """Run code against ``modules`` and put back their values, gradients and train/eval flags."""
    saved_state = [{k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()} for m in modules]
    saved_grads = [{n: (p.grad.detach().clone() if p.grad is not None else None) for n, p in m.named_parameters()}
                   for m in modules]
    saved_modes = [{n: sub.training for n, sub in m.named_modules()} for m in modules]
    saved_rg = [{n: p.requires_grad for n, p in m.named_parameters()} for m in modules]
    try:
        yield
    finally:
        for m, state, grads, modes, rg in zip(modules, saved_state, saved_grads, saved_modes, saved_rg):
            live = m.state_dict(keep_vars=True)
            with torch.no_grad():
                for k, v in state.items():
                    if k in live and live[k].shape == v.shape:
                        live[k].copy_(v)
            for n, p in m.named_parameters():
                if n in grads:
                    p.grad = grads[n]
                if n in rg:
                    p.requires_grad_(rg[n])
            for n, sub in m.named_modules():
                if n in modes:
                    sub.training = modes[n]


def _dummy_batch(model: nn.Module, n: int = 2, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=gen).to(_device_of(model))


# ---------------------------------------------------------------------------
# Structural checks
# ---------------------------------------------------------------------------

def _num_classes(num_classes: Any) -> int:
    if hasattr(num_classes, "classes"):
        num_classes = len(num_classes.classes)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ArgumentError(f"num_classes must be a positive integer (or a dataset with .classes), got {num_classes!r}")
    return num_classes


def _final_linear(module: nn.Module) -> nn.Linear | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def check_head(model: nn.Module, num_classes: int) -> None:
    """The model's head gives one output per class, and it is trainable.

    Runs the model on a small batch (in eval mode, without gradients) so a head of the
    wrong width, or one the features cannot reach, is caught as it would be in training.

    Args:
        model: the learner's model (or just the head, an ``nn.Linear``).
        num_classes: number of classes in the dataset (or the dataset, read from ``.classes``).

    >>> import tlkit
    >>> check_head(tlkit.load_backbone("resnet18", pretrained=False, num_classes=3), 3)
    ✓ head: 3 outputs for 3 classes
    """
    __tracebackhide__ = True
    num_classes = _num_classes(num_classes)
    _require(model, "model", nn.Module, "Build the model and give it a new head.")
    if isinstance(model, nn.Linear):
        head, where = model, "your head"
    else:
        path = head_path(model)
        module = model.get_submodule(path)
        head, where = _final_linear(module), f"the head (model.{path})"
        if head is None:
            raise CheckFailed(f"{where} is a {type(module).__name__} with no nn.Linear layer: the head should end in a "
                  "linear layer with one output per class.")
    if head.out_features != num_classes:
        raise CheckFailed(f"your head has {head.out_features} outputs, the dataset has {num_classes} classes.")
    frozen = [n for n, p in head.named_parameters() if not p.requires_grad]
    if frozen:
        raise CheckFailed(f"{where} is frozen (requires_grad is False for its {', '.join(frozen)}): training could not change "
              "it. A new head must stay trainable.")
    if not isinstance(model, nn.Linear):
        seen: list[torch.Size] = []
        hook = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
        try:
            with _untouched(model), torch.no_grad():
                model.eval()
                out = model(_dummy_batch(model))
        except Exception as exc:
            if seen and seen[-1][-1] != head.in_features:
                raise CheckFailed(
                    f"your head expects {head.in_features} input features, but the layers before it give a different "
                    "number per image: read the width from the layer you are replacing."
                ) from exc
            raise CheckFailed(f"running the model on a batch of images failed: {type(exc).__name__}: {exc}") from exc
        finally:
            hook.remove()
        if out.shape[-1] != num_classes:
            raise CheckFailed(f"the model gives {out.shape[-1]} outputs per image, the dataset has {num_classes} classes: "
                  "is the new head the last layer the model runs?")
    _ok(f"head: {num_classes} outputs for {num_classes} classes")


def _frozen_bn_problem(model: nn.Module, trainable: list[str]) -> str | None:
    """Why the BatchNorm layers outside ``trainable`` are not really frozen, or None.

    Uses :func:`tlkit.grading.verify.frozen` on a copy of the model: after ``model.train()``
    every frozen BatchNorm layer must run in eval mode and give the same output as in
    ``model.eval()``, whatever its ``momentum``.
    """
    try:
        verify.frozen(model, trainable, requires_grad=False)
    except verify.VerifyFailed as exc:
        return str(exc)
    return None


def check_frozen(model: nn.Module, until: str | None = None) -> None:
    """Every stage before ``until`` is frozen, BatchNorm statistics included; the rest trains.

    ``until`` has the meaning of :func:`tlkit.freeze`: the first stage that stays trainable
    (``None``: only the head trains). Frozen BatchNorm layers must not update their running
    statistics in ``model.train()`` mode; this is checked by running a small batch in train
    mode (the model is restored afterwards).

    >>> import tlkit
    >>> m = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2), until="layer4")
    >>> check_frozen(m, until="layer4")  # doctest: +ELLIPSIS
    ✓ frozen: stem, layer1 … layer3 (...); trainable: layer4, head (...)
    """
    __tracebackhide__ = True
    _require(model, "model", nn.Module)
    all_stages = stages(model)
    names = [s.name for s in all_stages]
    stop = len(all_stages) - 1 if until is None else names.index(get_stage(model, until).name)
    first = names[stop]
    problems = []
    count = {"frozen": 0, "trainable": 0}
    wrongly_trainable, wrongly_frozen = {}, {}
    for i, stage in enumerate(all_stages):
        for path in stage.modules:
            module = model.get_submodule(path)
            for name, p in module.named_parameters():
                count["trainable" if p.requires_grad else "frozen"] += p.numel()
                if i < stop and p.requires_grad:
                    wrongly_trainable[stage.name] = wrongly_trainable.get(stage.name, 0) + p.numel()
                if i >= stop and not p.requires_grad:
                    wrongly_frozen[stage.name] = wrongly_frozen.get(stage.name, 0) + p.numel()
    if stop and not count["frozen"]:
        problems.append(f"nothing is frozen: all {count['trainable']:,} parameters are trainable, but the stages "
                        f"before {first} should be frozen.")
    elif wrongly_trainable:
        n = sum(wrongly_trainable.values())
        problems.append(f"{_stage_names(list(wrongly_trainable))} should be frozen, but {n:,} of their parameters "
                        "are still trainable.")
    if wrongly_frozen:
        n = sum(wrongly_frozen.values())
        which = _stage_names(list(wrongly_frozen))
        if list(wrongly_frozen) == ["head"]:
            problems.append("the head is frozen: it could not learn the new classes.")
        else:
            problems.append(f"{which} should be trainable, but {n:,} of their parameters are frozen "
                            f"(the model should train from {first} on).")
    if problems:
        raise CheckFailed(" ".join(problems))
    trainable_paths = [m for stage in all_stages[stop:] for m in stage.modules]
    problem = _frozen_bn_problem(model, trainable_paths) if stop else None
    if problem:
        raise CheckFailed(f"requires_grad is off where it should be, but {problem}")
    frozen_part = f"{_stage_names(names[:stop])} ({count['frozen']:,} parameters, BatchNorm statistics fixed)" \
        if stop else "nothing"
    _ok(f"frozen: {frozen_part}; trainable: {_stage_names(names[stop:])} ({count['trainable']:,} parameters)")


def _wrong_rates(optimizer: torch.optim.Optimizer, named: dict[str, nn.Parameter], owner: dict[str, str],
                 lr: float | dict[str, float]) -> list[str]:
    """One problem per stage whose parameters train at a rate other than the one asked for."""
    rate_of = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    wrong: dict[str, set[float]] = {}
    for name, p in named.items():
        stage = owner[name]
        want = lr.get(stage) if isinstance(lr, dict) else lr
        if want is None or not p.requires_grad or id(p) not in rate_of:
            continue
        if not math.isclose(rate_of[id(p)], want, rel_tol=1e-9):
            wrong.setdefault(stage, set()).add(rate_of[id(p)])
    return [f"{'the head' if stage == 'head' else stage} trains at lr {', '.join(f'{r:g}' for r in sorted(rates))}; "
            f"the exercise asks for {(lr.get(stage) if isinstance(lr, dict) else lr):g}."
            for stage, rates in wrong.items()]


def check_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, *, lr: float | dict[str, float] | None = None,
                    kind: type | None = None) -> None:
    """The optimizer holds exactly the model's trainable parameters, each with a positive learning rate.

    Names what is wrong: frozen parameters it holds, trainable ones it misses (the new head
    in particular) and parameters that are not in the model at all (typically the old
    head, when the optimizer was made before the head was replaced). When the exercise
    states them, also checks the optimizer's class (``kind``, e.g. ``torch.optim.AdamW``) and
    the learning rates: ``lr`` is one rate for every parameter, or ``{stage name: rate}``
    (stage names as in :func:`tlkit.trainable_summary`; stages not named are not checked).

    >>> import torch, tlkit
    >>> m = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2))
    >>> check_optimizer(torch.optim.SGD(m.parameters(), lr=0.1), m)
    Traceback (most recent call last):
    ...
    tlkit.grading.CheckFailed: the optimizer holds 60 frozen parameter tensors (11,176,512 values, in stem, layer1 … layer4): ...
    """
    __tracebackhide__ = True
    if isinstance(optimizer, (list, tuple)) or hasattr(optimizer, "__next__"):
        raise CheckFailed("this is a collection of parameters (or parameter groups), not an optimizer: pass it to an optimizer "
              "class from torch.optim.")
    _require(optimizer, "optimizer", torch.optim.Optimizer, "Create it with a class from torch.optim.")
    _require(model, "model", nn.Module)
    if kind is not None and not isinstance(optimizer, kind):
        raise CheckFailed(f"the optimizer is {type(optimizer).__name__}; the exercise asks for torch.optim."
                          f"{kind.__name__}.")
    held = {id(p): p for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    in_model = {id(p) for p in named.values()}
    owner = _param_stages(model)
    frozen_held = [n for n, p in named.items() if id(p) in held and not p.requires_grad]
    missing = [n for n, p in named.items() if p.requires_grad and id(p) not in held]
    foreign = [p for i, p in held.items() if i not in in_model]
    problems = []
    if frozen_held:
        values = sum(named[n].numel() for n in frozen_held)
        problems.append(f"the optimizer holds {len(frozen_held)} frozen parameter tensors ({values:,} values, in "
                        f"{_stage_names([owner[n] for n in frozen_held])}): it should hold only what trains.")
    missing_head = [n for n in missing if owner[n] == "head"]
    missing_body = [n for n in missing if owner[n] != "head"]
    if missing_head:
        problems.append("the new head is not in the optimizer, so it would never learn.")
    if missing_body:
        values = sum(named[n].numel() for n in missing_body)
        problems.append(f"{len(missing_body)} trainable parameter tensors ({values:,} values, in "
                        f"{_stage_names([owner[n] for n in missing_body])}) are not in the optimizer.")
    if foreign:
        values = sum(p.numel() for p in foreign)
        cause = " Was it made before the head was replaced?" if missing_head else ""
        problems.append(f"the optimizer holds {len(foreign)} tensors ({values:,} values) that are not part of this "
                        f"model.{cause}")
    for i, group in enumerate(optimizer.param_groups):
        rate = group.get("lr", None)
        if isinstance(rate, torch.Tensor):
            rate = float(rate)
        if not isinstance(rate, Real) or not rate > 0:
            problems.append(f"parameter group {group.get('name', i)!r} has learning rate {rate!r}: it would not move.")
    if lr is not None and not problems:
        problems += _wrong_rates(optimizer, named, owner, lr)
    if problems:
        raise CheckFailed(" ".join(problems))
    trainable = [n for n, p in named.items() if p.requires_grad]
    if not trainable:
        raise CheckFailed("every parameter of the model is frozen: there is nothing for the optimizer to train.")
    values = sum(named[n].numel() for n in trainable)
    _ok(f"optimizer: holds exactly the {len(trainable)} trainable parameter tensors ({values:,} values, in "
        f"{_stage_names([owner[n] for n in trainable])}), none frozen")


def _find_normalize(transform: Any) -> list[Any]:
    """Every Normalize step in a (nested) torchvision v1/v2 Compose, RandomApply, RandomChoice or Sequential."""
    found: list[Any] = []

    def walk(t: Any, depth: int = 0) -> None:
        if depth > 10:
            return
        if type(t).__name__ == "Normalize" and hasattr(t, "mean") and hasattr(t, "std"):
            found.append(t)
            return
        children = getattr(t, "transforms", None)
        if isinstance(t, nn.Sequential):
            children = list(t)
        if isinstance(children, (list, tuple, nn.ModuleList)):
            for child in children:
                walk(child, depth + 1)

    walk(transform)
    return found


def _as_tuple(values: Any) -> tuple[float, ...]:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    if isinstance(values, Real):
        values = [values] * 3
    return tuple(float(v) for v in values)


def _close(a: Sequence[float], b: Sequence[float], tol: float = 2e-3) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def _apply(transform: Callable, image: Any) -> torch.Tensor | None:
    try:
        out = transform(image)
    except Exception:
        return None
    return out if isinstance(out, torch.Tensor) else None


def check_normalization(transform: Callable, model: nn.Module | str) -> None:
    """The transform normalises inputs exactly as the backbone's weights expect.

    Finds the ``Normalize`` step in a torchvision v1 or v2 ``Compose`` (nested ones and
    ``RandomApply`` too) and compares its mean and std with the backbone's record
    (``tlkit.backbone_info(model).preprocessing``). Then runs the transform on a plain
    coloured image to catch what the record cannot show: pixel values that were never
    scaled to [0, 1], a second normalisation, a hand-written one. A dataset with a
    ``.transform`` may be passed instead of the transform. The message never states the
    expected values.

    >>> import tlkit
    >>> check_normalization(tlkit.preprocess("efficientnet_lite0"), "efficientnet_lite0")
    ✓ normalization: the same as efficientnet_lite0 was trained with
    """
    __tracebackhide__ = True
    if transform is not None and not callable(transform) and hasattr(transform, "transform"):
        transform = transform.transform  # a dataset: check the transform it applies
    _require(transform, "transform", hint="Build the input transform (a torchvision Compose).")
    if not callable(transform):
        raise CheckFailed(f"transform should be a callable torchvision transform, but it is a {type(transform).__name__}.")
    _require(model, "the model", (nn.Module, str))
    info = backbone_info(model)
    want = info.preprocessing
    where = "look at tlkit.backbone_info(model).preprocessing, or let tlkit.preprocess(model) build the transform"
    steps = _find_normalize(transform)
    if len(steps) > 1:
        raise CheckFailed(f"your transform normalises {len(steps)} times; it should normalise once, the way {info.name} was "
              "trained.")
    if steps:
        mean, std = _as_tuple(steps[0].mean), _as_tuple(steps[0].std)
        if not (_close(mean, want.mean) and _close(std, want.std)):
            imagenet = _close(mean, IMAGENET_MEAN) and _close(std, IMAGENET_STD)
            expected_imagenet = _close(want.mean, IMAGENET_MEAN) and _close(want.std, IMAGENET_STD)
            fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
            if imagenet and not expected_imagenet:
                raise CheckFailed(f"you normalise with ImageNet's usual mean and std, but {info.name} was trained with a "
                      f"different normalization than ImageNet's: {where}.")
            if expected_imagenet:
                raise CheckFailed(f"you normalise with mean={fmt(mean)}, std={fmt(std)}, but {info.name} was trained with "
                      f"ImageNet's normalization: {where}.")
            raise CheckFailed(f"you normalise with mean={fmt(mean)}, std={fmt(std)}, which is not the normalization "
                  f"{info.name} was trained with: {where}.")
    # Behaviour: a plain coloured image through the learner's transform and through the reference.
    from PIL import Image

    image = Image.new("RGB", (320, 320), (200, 120, 40))
    reference = want.transform(train=False)(image).mean(dim=(1, 2))
    first = _apply(transform, image)
    if first is None:  # a transform for tensors: give it the scaled image the reference pipeline sees
        scaled = torch.tensor([200, 120, 40], dtype=torch.float32).div(255).view(3, 1, 1).expand(3, 224, 224)
        first = _apply(transform, scaled.clone())
        if first is None:
            try:
                transform(image)
            except Exception as exc:
                raise CheckFailed(f"your transform fails on an image: {type(exc).__name__}: {exc}") from exc
            raise CheckFailed(f"your transform returns a {type(transform(image)).__name__}, not a tensor: the model needs a "
                  "float tensor.")
        second = _apply(transform, scaled.clone())
    else:
        second = _apply(transform, image)
    if not first.is_floating_point():
        raise CheckFailed(f"your transform returns a {first.dtype} tensor; the model needs float values: convert to float "
              "(scaled to [0, 1]) before normalising.")
    if first.ndim != 3 or first.shape[0] != 3:
        raise CheckFailed(f"your transform returns a tensor of shape {tuple(first.shape)}; one image should come out as "
              "3 × height × width.")
    got = first.mean(dim=(1, 2))
    if got.abs().max() > 20:
        raise CheckFailed("the values coming out of your transform are far too large: the pixels were not scaled to [0, 1] "
              "before normalising (use v2.ToDtype(torch.float32, scale=True), or v1's ToTensor()).")
    deterministic = second is not None and torch.allclose(first.mean(dim=(1, 2)), second.mean(dim=(1, 2)))
    if deterministic and not torch.allclose(got, reference, atol=0.02):
        if steps:
            raise CheckFailed(f"your Normalize step has the right values, but the output still differs from what {info.name} "
                  "expects: is something else changing the values before or after it (a second scaling, "
                  "a colour change)?")
        raise CheckFailed(f"I found no Normalize step in your transform, and its output does not match the normalization "
              f"{info.name} was trained with: {where}.")
    if not steps and not deterministic:
        raise CheckFailed(f"I found no Normalize step in your transform: {info.name} expects its inputs normalised the way "
              f"its weights were trained: {where}.")
    _ok(f"normalization: the same as {info.name} was trained with")


# ---------------------------------------------------------------------------
# Behavioural checks
# ---------------------------------------------------------------------------

def _is_frozen_bn(module: nn.Module) -> bool:
    if not isinstance(module, _BatchNorm) or not module.track_running_stats:
        return False
    if getattr(module, "tlkit_frozen", False):
        return True
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def _loss_text(result: Any) -> str:
    try:
        value = float(result.detach() if isinstance(result, torch.Tensor) else result)
    except (TypeError, ValueError, RuntimeError):
        return ""
    return f" (loss {value:.3g})"


def check_training_step(model: nn.Module, step_fn: Callable, batch: Any) -> None:
    """One call of the learner's training step moves what trains and nothing that is frozen.

    Calls ``step_fn(model, batch)`` twice (with a fixed random seed), and restores the model
    exactly after each call (its optimizer keeps the steps' state, e.g. momentum). The first
    call compares every parameter and BatchNorm statistic before and after; the second
    (:func:`tlkit.grading.verify.training_step`, for an ``(x, y)`` batch) compares the
    gradients with the cross-entropy loss's own. Passes when

    * every stage with trainable parameters changed (so gradients reached it and the optimizer
      applied them; single tensors may stay put when their gradient is vanishingly small),
    * no frozen parameter changed,
    * the running statistics of frozen BatchNorm layers did not change (a BatchNorm layer
      in train mode updates them even when ``requires_grad`` is False);
    * the step put the model in train mode, cleared the old gradients, back-propagated the
      cross-entropy loss of the batch (``.grad`` is its gradient), moved the weights against
      it, and returned that loss.

    >>> import torch, tlkit
    >>> m = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2), until="layer4")
    >>> opt = torch.optim.SGD(tlkit.param_groups(m, lr=0.1), lr=0.1)
    >>> def step(model, batch):
    ...     x, y = batch
    ...     model.train(); opt.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(model(x), y); loss.backward(); opt.step()
    ...     return loss
    >>> check_training_step(m, step, (torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])))  # doctest: +ELLIPSIS
    ✓ training step: ...
    """
    __tracebackhide__ = True
    _require(model, "model", nn.Module)
    _require(step_fn, "your training step", hint="Write the function that does one training step.")
    if not callable(step_fn):
        raise CheckFailed(f"your training step should be a function called as step_fn(model, batch), but it is a "
              f"{type(step_fn).__name__}.")
    named = dict(model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    frozen = [n for n, p in named.items() if not p.requires_grad]
    if not trainable:
        raise CheckFailed("every parameter is frozen: a training step could not change anything. Keep at least the head "
              "trainable.")
    frozen_bns = {n: m for n, m in model.named_modules() if _is_frozen_bn(m)}
    owner = _param_stages(model)
    before = {n: p.detach().clone() for n, p in named.items()}
    bn_before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in frozen_bns.items()
                 if m.running_mean is not None}
    with _untouched(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        result = _call_answer(step_fn, model, batch, what="your training step")
        after = {n: p.detach().clone() for n, p in named.items()}
        bn_after = {n: (frozen_bns[n].running_mean.clone(), frozen_bns[n].running_var.clone()) for n in bn_before}
    if isinstance(result, torch.Tensor) and result.numel() == 1 and not torch.isfinite(result).all():
        raise CheckFailed(f"your training step returned a loss of {result.item()}: the training diverged or the loss is "
              "computed on the wrong values.")
    unchanged = [n for n in trainable if torch.equal(before[n], after[n])]
    # Judge by stage: a single tensor can legitimately stay put (a gradient of 1e-9 times the
    # learning rate is below float32 resolution); a whole trainable stage cannot.
    trainable_stages = list(dict.fromkeys(owner[n] for n in trainable))
    still = set(unchanged)
    stuck = [s for s in trainable_stages if all(n in still for n in trainable if owner[n] == s)]
    moved_frozen = [n for n in frozen if not torch.equal(before[n], after[n])]
    moved_bn = [n for n in bn_before if not (torch.equal(bn_before[n][0], bn_after[n][0])
                                             and torch.equal(bn_before[n][1], bn_after[n][1]))]
    problems = []
    if len(unchanged) == len(trainable):
        problems.append(f"none of the {len(trainable)} trainable parameter tensors changed after your step: a "
                        "training step must compute the gradients of the loss and let the optimizer apply them.")
    elif stuck:
        n_stuck = sum(owner[n] in stuck for n in trainable)
        problems.append(f"nothing changed in {_stage_names(stuck)} ({n_stuck} trainable parameter tensors), though "
                        "the rest of the model moved: are they in the optimizer?")
    if moved_frozen:
        problems.append(f"{len(moved_frozen)} frozen parameter tensors changed (in "
                        f"{_stage_names([owner[n] for n in moved_frozen])}): frozen weights must stay as they are.")
    if moved_bn:
        problems.append(f"the running statistics of {len(moved_bn)} frozen BatchNorm layers changed (first: "
                        f"{moved_bn[0]}): in train mode BatchNorm updates them even when requires_grad is False, "
                        "so frozen BatchNorm layers must stay in eval mode (tlkit.freeze does this).")
    if problems:
        raise CheckFailed(" ".join(problems))
    # Then a second call, judged on what a training step must do rather than on what moved:
    # noise added under no_grad moves every weight too (see tlkit/grading/verify.py).
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        with _untouched(model):
            try:
                verify.training_step(model, step_fn, batch)
            except verify.VerifyFailed as exc:
                raise CheckFailed(str(exc)) from None
    _ok(f"training step: the trainable part ({_stage_names(trainable_stages)}) changed; {len(frozen)} frozen "
        f"tensors and {len(bn_before)} frozen BatchNorm layers unchanged{_loss_text(result)}")


def _reference_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """What the model's head reads for these images (eval mode), and the head's output width."""
    head = model.get_submodule(head_path(model))
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        with _untouched(model), torch.no_grad():
            model.eval()
            model(images)
    finally:
        hook.remove()
    out_width = head.out_features if isinstance(head, nn.Linear) else -1
    return seen[-1].flatten(1), out_width


def check_features(model: Callable | nn.Module, reference_model: nn.Module, images: torch.Tensor) -> None:
    """The learner's feature extractor returns what the reference model's head reads.

    ``model`` is called on ``images`` (a normalised N×3×H×W batch) and must return an
    N×D tensor equal (to float precision) to the pooled features that reach the head of
    ``reference_model`` in eval mode. The models are restored afterwards.

    >>> import torch, tlkit
    >>> m = tlkit.load_backbone("resnet18", pretrained=False)
    >>> body = torch.nn.Sequential(*list(m.children())[:-1], torch.nn.Flatten()).eval()
    >>> check_features(body, m, torch.randn(2, 3, 64, 64))  # doctest: +ELLIPSIS
    ✓ features: 2 images × 512 features, the same as the reference...
    """
    __tracebackhide__ = True
    _require(model, "your feature extractor", hint="Write the function (or model) that returns features.")
    if not callable(model):
        raise CheckFailed(f"your feature extractor should be a function or a model, but it is a {type(model).__name__}.")
    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images))
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a batch tensor of shape N×3×H×W (normalised as the model expects)")
    images = images.to(_device_of(reference_model))
    modules = [reference_model] + ([model] if isinstance(model, nn.Module) else [])
    # The learner's code runs first: while it runs, no frame holds the reference features
    # (a function that reads ``expected`` from ``inspect.stack()`` finds nothing to copy).
    with _untouched(*modules), torch.no_grad():
        got = _call_answer(model, images.clone(), what="your feature extractor")
        training = isinstance(model, nn.Module) and any(
            m.training for m in model.modules() if isinstance(m, (_BatchNorm, nn.Dropout)))
    expected, out_width = _reference_features(reference_model, images)
    if isinstance(got, (tuple, list)):
        raise CheckFailed(f"your feature extractor returns a {type(got).__name__}; it should return one tensor of features.")
    if not isinstance(got, torch.Tensor):
        try:
            got = torch.as_tensor(got)
        except Exception:
            raise CheckFailed(f"your feature extractor returns a {type(got).__name__}; it should return a tensor.")
    got = got.detach().to(expected.device, torch.float32)
    n, width = expected.shape
    if got.ndim == 4 and got.shape[2:] == (1, 1):
        got = got.flatten(1)
    if got.ndim == 4:
        raise CheckFailed(f"your feature extractor returns feature maps of shape {tuple(got.shape)}; the head reads one vector "
              "per image: pool each map to a single value (global average) and flatten.")
    if got.ndim != 2 or got.shape[0] != n:
        raise CheckFailed(f"your feature extractor returns shape {tuple(got.shape)}; for {n} images it should return "
              f"{n} rows of features.")
    if got.shape[1] != width:
        if got.shape[1] == out_width:
            raise CheckFailed(f"your feature extractor returns {out_width} values per image: those are the head's outputs "
                  "(class scores), not the features the head reads.")
        raise CheckFailed(f"your feature extractor returns {got.shape[1]} values per image, but the head reads a different "
              "number: take the output of the layer right before the head.")
    diff = (got - expected).abs().max().item()
    scale = expected.abs().max().item() + 1e-8
    if not math.isfinite(diff) or diff > 1e-3 * scale + 1e-5:
        hint = (" Your model is in training mode, so BatchNorm uses batch statistics (and dropout is on): "
                "call .eval() on it.") if training else \
            " Check that you take the output right before the head, in eval mode, from the pretrained model."
        raise CheckFailed(f"your features differ from the reference for the same images (largest difference {diff:.3g}, "
              f"while features reach {scale:.3g}).{hint}")
    _ok(f"features: {n} images × {width} features, the same as the reference (largest difference {diff:.1g})")


# ---------------------------------------------------------------------------
# Learning rates
# ---------------------------------------------------------------------------

def lr_range(finder_result: Any) -> tuple[float, float]:
    """The learning rates :func:`check_lr` accepts for an LR-finder result, as ``(low, high)``.

    ``low`` is a tenth of the finder's suggestion; ``high`` is the smaller of ten times
    the suggestion and the learning rate where the smoothed loss is lowest (past that point
    the loss stops falling and soon blows up); the suggestion itself is always inside. The
    loss is smoothed with a centred moving average over 5 steps (of ``raw_losses`` when the
    result has them). An accepted rate must also lie within the range the finder tried.
    Without a usable suggestion, ``low`` is where the smoothed loss has made a tenth of its
    total drop. (The rule lives in :mod:`tlkit.grading.verify`, which the hidden tests use.)
    """
    return verify.lr_range(finder_result)


def check_lr(lr: float, finder_result: Any) -> None:
    """The chosen learning rate lies in the range the LR finder's curve supports.

    ``finder_result`` must be what :func:`tlkit.train.lr_find` returns (an
    ``LRFinderResult``; a look-alike object with a falling loss is refused). Accepted: from a tenth of the suggestion to ten times it, but always
    below the learning rate where the smoothed loss is lowest, and inside the swept range
    (:func:`lr_range` gives the bounds). The message says which way to look on the plot,
    not the answer.

    >>> from tlkit.train import LRFinderResult
    >>> lrs = [10 ** (-6 + i / 4) for i in range(25)]
    >>> losses = [2.0] * 8 + [2.0 - 0.2 * i for i in range(1, 9)] + [0.5, 0.6, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    >>> finder = LRFinderResult(lrs, losses, losses, suggestion=lrs[12])
    >>> check_lr(1e-3, finder)
    ✓ learning rate 0.001: in the range the LR finder supports
    """
    __tracebackhide__ = True
    if any(finder_result is blank for blank in _BLANKS):
        raise CheckFailed("there is no LR-finder result: run the learning-rate finder first (tlkit.train.lr_find).")
    from ..train import LRFinderResult

    if not isinstance(finder_result, LRFinderResult):
        raise CheckFailed(f"the finder result should be what tlkit.train.lr_find returns, but it is a "
                          f"{type(finder_result).__name__}: run the learning-rate finder.")
    _require(lr, "lr", hint="Read a learning rate off the finder's plot.")
    if isinstance(lr, torch.Tensor) and lr.numel() == 1:
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, Real):
        raise CheckFailed(f"lr should be a number, but it is a {type(lr).__name__}.")
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise CheckFailed(f"lr = {lr!r}: a learning rate must be a positive number.")
    lrs = [float(v) for v in finder_result.lrs]
    low, high = lr_range(finder_result)
    if lr < lrs[0] or lr > lrs[-1]:
        raise CheckFailed(f"lr = {lr:g} lies outside the range the finder tried ({lrs[0]:g} to {lrs[-1]:g}), so its curve says "
              "nothing about it: pick a value from the plot.")
    if lr >= high:
        raise CheckFailed(f"at lr = {lr:g} the finder's loss is already at its lowest, rising or past the steep part: training "
              "there would be unstable. Look further left, where the loss is still falling steeply.")
    if lr < low:
        raise CheckFailed(f"at lr = {lr:g} the finder's loss has hardly started to fall: training would be very slow. Look "
              "further right, where the curve drops most steeply.")
    _ok(f"learning rate {lr:g}: in the range the LR finder supports")
