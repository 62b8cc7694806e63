"""Authoritative re-checks for hidden test cells: a file that imports nothing from tlkit.

The visible checks (:mod:`tlkit.grading`) run in the learner's kernel, where a cell can
replace any of their names (``tlkit.grading._fail = lambda m: None``, a new
``tlkit.grading.check_frozen``, a new ``tlkit.trainable_summary``). So the hidden test
cells do not call them: they load a *fresh copy of this file* under a private name, not
through ``sys.modules`` (the import system's finders locate tlkit's files, as ``import`` would,
editable installs included), and re-verify on the real objects::

    import sys as _sys, importlib.util as _u  # a fresh copy of tlkit's verifier, read from its file, not from sys.modules:
    _t = next(s for f in _sys.meta_path if hasattr(f, "find_spec") and (s := f.find_spec("tlkit", None)))
    _s = _u.spec_from_file_location("_tlkit_verify", _t.submodule_search_locations[0] + "/grading/verify.py")
    _v = _u.module_from_spec(_s); _s.loader.exec_module(_v)  # nothing a cell changed in tlkit reaches it
    _v.frozen(model, trainable=["classifier"])

What each function re-verifies, on the objects themselves rather than on what tlkit says
about them:

* :func:`frozen`: ``requires_grad`` is off exactly outside the trainable parts, *and* after
  ``model.train()`` every frozen BatchNorm layer runs in eval mode and gives the same output
  as in ``model.eval()`` (``bn.momentum = 0`` with the layer in train mode does not pass:
  the layer still normalises with the batch's statistics);
* :func:`training_step`: the step really computed the gradient of the cross-entropy loss
  (``.grad`` equals a reference gradient computed here, stale gradients were cleared), the
  weights moved against it, frozen weights did not, the model was put in train mode and the
  returned loss is the real one (noise added under ``no_grad`` and ``torch.tensor(1.0)``
  do not pass);
* :func:`lr_finder`: the finder result is a real ``tlkit.train.LRFinderResult`` and, given a
  second run of the same ``lr_find`` (from :func:`fresh_module`, so a replaced
  ``tlkit.train.lr_find`` is not the one that runs), the same curve (a ``SimpleNamespace``
  with a falling loss does not pass); :func:`learning_rate` then judges the rate on the fresh
  curve;
* :func:`features`: the learner's extractor runs *before* the reference is computed, so no
  reference answer exists in any frame it could inspect;
* :func:`head`, :func:`optimizer`, :func:`normalization`: the head layer, the optimizer's
  parameter set and rates, and the transform's output, against values the test states.

Limits, honestly: code that runs in the same process as the learner's code can never be
made perfectly tamper-proof. This file trusts Python, its standard library, the files
of the installed tlkit and torch (a few torch functions are checked on known values when it
loads). A cell that patches torch itself, rewrites ``sys.path`` or ``importlib``, edits files
on disk or replaces the model's own ``forward`` with a fake can still fool it; those
are what the instructor's static scan of each submission looks for (``tlkit.classroom``),
and what an instructor's review of a flagged submission settles.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["VerifyFailed", "head", "frozen", "optimizer", "training_step", "features", "lr_finder",
           "same_curve", "learning_rate", "lr_range", "normalization"]


class VerifyFailed(AssertionError):
    """A hidden re-check failed (an ``AssertionError``, so nbgrader scores the cell 0)."""


def _fail(message: str) -> None:
    __tracebackhide__ = True
    raise VerifyFailed(message)


def _canaries() -> None:
    """Refuse to work with a torch whose basic functions were replaced by a cell."""
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0])
    logits, target = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    ok = (torch.equal(a, a) and not torch.equal(a, b) and not torch.allclose(a, b)
          and abs(float(F.cross_entropy(logits, target)) - math.log(2)) < 1e-6)
    with torch.enable_grad():
        w = torch.tensor([2.0], requires_grad=True)
        (w * w).sum().backward()
    if not (ok and w.grad is not None and float(w.grad[0]) == 4.0):
        raise VerifyFailed("torch's own functions do not behave as torch's do in this kernel: a cell replaced "
                           "them. Restart the kernel and run the notebook from the top.")


_canaries()


def _named_under(model: nn.Module, prefixes: Sequence[str]):
    """(name, parameter, under_prefix) for every parameter of the model."""
    def under(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)
    return [(n, p, under(n)) for n, p in model.named_parameters()]


def _batch(n: int = 4, size: int = 64, channels: int = 3, device: torch.device | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(n, channels, size, size, generator=gen).to(device or "cpu")


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# ---------------------------------------------------------------------------
# What was built
# ---------------------------------------------------------------------------

def head(model: nn.Module, path: str | None, num_classes: int, in_features: int | None = None) -> None:
    """``model.<path>`` is a trainable ``nn.Linear`` with ``num_classes`` outputs that the model runs last.

    ``path=None``: the model's last ``nn.Linear`` layer.
    """
    __tracebackhide__ = True
    if not isinstance(model, nn.Module):
        _fail(f"model is not written yet (it is {type(model).__name__}).")
    if path is None:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            _fail("the model has no nn.Linear layer: the head should be one.")
        path = linears[-1]
    layer = model.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        _fail(f"model.{path} is a {type(layer).__name__}, not an nn.Linear.")
    if layer.out_features != num_classes:
        _fail(f"model.{path} has {layer.out_features} outputs, the dataset has {num_classes} classes.")
    if in_features is not None and layer.in_features != in_features:
        _fail(f"model.{path} reads {layer.in_features} features; the layers before it give {in_features}.")
    if not all(p.requires_grad for p in layer.parameters()):
        _fail(f"model.{path} is frozen: a new head must stay trainable.")
    work = copy.deepcopy(model).eval()
    with torch.no_grad():
        out = work(_batch(2, device=_device(work)))
    if out.shape[-1] != num_classes:
        _fail(f"the model gives {out.shape[-1]} outputs per image, not {num_classes}.")


def frozen(model: nn.Module, trainable: Sequence[str], images: torch.Tensor | None = None, *,
           requires_grad: bool = True) -> None:
    """Everything outside the ``trainable`` module paths is frozen, BatchNorm included; the rest trains.

    Frozen means: ``requires_grad`` is False, and after ``model.train()`` (what ``fit`` calls)
    every BatchNorm layer outside ``trainable`` runs in eval mode and its output is the same as
    in ``model.eval()``. Checked on a copy of the model, so the model itself is not touched.
    ``requires_grad=False`` skips the first part (for a caller that checked it already).
    """
    __tracebackhide__ = True
    if not isinstance(model, nn.Module):
        _fail(f"model is not written yet (it is {type(model).__name__}).")
    params = _named_under(model, trainable)
    loose = [n for n, p, under in params if not under and p.requires_grad]
    stiff = [n for n, p, under in params if under and not p.requires_grad]
    if loose and requires_grad:
        _fail(f"{len(loose)} parameter tensors that should be frozen are still trainable (first: {loose[0]}).")
    if stiff and requires_grad:
        _fail(f"{len(stiff)} parameter tensors that should train are frozen (first: {stiff[0]}).")
    work = copy.deepcopy(model)
    names = [n for n, m in work.named_modules() if isinstance(m, _BatchNorm) and n
             and not any(n == p or n.startswith(p + ".") for p in trainable)]
    if not names:
        return
    seen: dict[str, list] = {n: [] for n in names}
    hooks = [work.get_submodule(n).register_forward_hook(
        lambda m, args, out, n=n: seen[n].append((m.training, out.detach().clone()))) for n in names]
    x = _batch(device=_device(work)) if images is None else images.to(_device(work))
    with torch.no_grad():
        work.eval()
        work(x)
        work.train()
        work(torch.flip(x, dims=[0]) * 2 + 1)  # another batch first: statistics that move show up below
        work(x)
    for h in hooks:
        h.remove()
    in_train = [n for n in names if any(training for training, _ in seen[n][1:])]
    if in_train:
        _fail(f"{len(in_train)} BatchNorm layers in the frozen stages still run in training mode after model.train() "
              f"(first: {in_train[0]}): they normalise with each batch's statistics and update their running "
              "statistics, so the 'frozen' features change. Frozen BatchNorm layers must stay in eval mode "
              "(tlkit.freeze does this: see tlkit/freezing.py).")
    changed = [n for n in names if not torch.allclose(seen[n][0][1], seen[n][2][1], atol=1e-5, rtol=1e-4)]
    if changed:
        _fail(f"the output of {len(changed)} BatchNorm layers in the frozen stages differs between model.eval() and model.train() "
              f"(first: {changed[0]}): the frozen part must compute the same features in both modes.")


def optimizer(opt: Any, model: nn.Module, lr: float | dict[str, float] | None = None,
              kind: str | None = None) -> None:
    """``opt`` is a torch optimizer holding exactly the model's trainable parameters, at the stated rates.

    ``lr`` is one rate for every group, or ``{module path: rate}`` (the longest matching path
    decides a parameter's rate). ``kind`` is the optimizer's class name (e.g. ``"AdamW"``).
    """
    __tracebackhide__ = True
    if not isinstance(opt, torch.optim.Optimizer):
        _fail(f"the optimizer is not written yet (it is {type(opt).__name__}, not a torch.optim optimizer).")
    if kind is not None and type(opt).__name__ != kind:
        _fail(f"the optimizer is {type(opt).__name__}, not {kind}.")
    held = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    want = {id(p) for p in named.values() if p.requires_grad}
    if set(held) != want:
        extra, missing = len(set(held) - want), len(want - set(held))
        _fail(f"the optimizer should hold exactly the {len(want)} trainable parameter tensors; it holds {extra} "
              f"others and misses {missing}.")
    if lr is None:
        return
    for name, p in named.items():
        if not p.requires_grad:
            continue
        if isinstance(lr, dict):
            paths = [k for k in lr if name == k or name.startswith(k + ".")]
            if not paths:
                continue
            rate = lr[max(paths, key=len)]
        else:
            rate = lr
        got = float(held[id(p)]["lr"])
        if not math.isclose(got, rate, rel_tol=1e-9):
            _fail(f"{name} trains at lr {got:g}, not {rate:g}.")


def normalization(transform: Callable, mean: Sequence[float], std: Sequence[float], size: int = 224) -> None:
    """A plain coloured image comes out of ``transform`` as ``(pixel / 255 - mean) / std``, ``size`` pixels square."""
    __tracebackhide__ = True
    from PIL import Image

    if not callable(transform):
        _fail(f"the transform is not written yet (it is {type(transform).__name__}).")
    rgb = (200, 120, 40)
    out = transform(Image.new("RGB", (320, 300), rgb))
    if not isinstance(out, torch.Tensor) or out.ndim != 3 or tuple(out.shape) != (3, size, size):
        _fail(f"the transform should give a 3 × {size} × {size} tensor, got {getattr(out, 'shape', type(out))}.")
    want = torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, mean, std)])
    if not torch.allclose(out.float().mean(dim=(1, 2)), want, atol=2e-2):
        _fail("the transform's output is not normalised the way the backbone was trained.")


# ---------------------------------------------------------------------------
# What was done
# ---------------------------------------------------------------------------

def training_step(model: nn.Module, step_fn: Callable, batch: Any) -> None:
    """One call ``step_fn(model, batch)`` is a real training step.

    Computes the reference first, on a copy of the model in train mode: the cross-entropy loss
    of ``model(x)`` against ``y`` and its gradient. Then plants stale gradients on the model,
    puts it in eval mode and calls the learner's step (same random seed). Passes when the model
    ended in train mode, every trainable parameter's ``.grad`` is the reference gradient (so
    the stale ones were cleared and the loss was back-propagated), the trainable parameters
    moved against it, no frozen parameter moved, and the returned loss is the reference loss.
    The model keeps the step (as it would in the lesson); its gradients are cleared.
    """
    __tracebackhide__ = True
    if not callable(step_fn):
        _fail(f"the training step is not written yet (it is {type(step_fn).__name__}).")
    x, y = batch
    named = [(n, p) for n, p in model.named_parameters()]
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if not trainable:
        _fail("every parameter is frozen: a training step could not change anything.")
    ref_model = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(0)
        ref_loss = F.cross_entropy(ref_model(x), y)
        ref_params = [p for n, p in ref_model.named_parameters() if p.requires_grad]
        ref_grads = torch.autograd.grad(ref_loss, ref_params, allow_unused=True)
    ref_grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(ref_params, ref_grads)]
    before = {n: p.detach().clone() for n, p in named}
    gen = torch.Generator().manual_seed(99)
    for _, p in trainable:  # stale gradients a step must clear first
        p.grad = (torch.randn(p.shape, generator=gen) * 10).to(p.device, p.dtype)
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            result = step_fn(model, batch)
        except NotImplementedError:
            _fail("the training step is not written yet: it raises NotImplementedError.")
    problems = []
    if not model.training:
        problems.append("the model was left in eval mode: a training step puts it in training mode (model.train()).")
    grads = [p.grad for _, p in trainable]
    if any(g is None for g in grads):
        problems.append("after your step some trainable parameters have no gradient: compute the loss from the "
                        "model's outputs and call loss.backward().")
    else:
        got = torch.cat([g.detach().flatten().float().cpu() for g in grads])
        ref = torch.cat([g.flatten().float().cpu() for g in ref_grads])
        cos = float(torch.dot(got, ref) / (got.norm() * ref.norm() + 1e-12))
        if cos < 0.99 or not math.isclose(float(got.norm()), float(ref.norm()), rel_tol=0.05, abs_tol=1e-8):
            problems.append("the gradients after your step are not those of the cross-entropy loss on this batch: "
                            "clear the old gradients (optimizer.zero_grad()) before loss.backward(), and use "
                            "F.cross_entropy(model(x), y).")
    delta = torch.cat([(p.detach() - before[n]).flatten().float().cpu() for n, p in trainable])
    ref = torch.cat([g.flatten().float().cpu() for g in ref_grads])
    if not bool(delta.abs().sum() > 0):
        problems.append("no trainable weight changed: call optimizer.step() after loss.backward().")
    elif not float(torch.dot(delta, -ref)) > 0:
        problems.append("the weights did not move against the gradient of the loss: the update is not a "
                        "training step.")
    moved_frozen = [n for n, p in named if not p.requires_grad and not torch.equal(p.detach(), before[n])]
    if moved_frozen:
        problems.append(f"{len(moved_frozen)} frozen parameter tensors changed (first: {moved_frozen[0]}).")
    number = isinstance(result, (int, float)) and not isinstance(result, bool)
    if not number and not (isinstance(result, torch.Tensor) and result.numel() == 1):
        problems.append(f"your step should return the loss (a one-number tensor), not a {type(result).__name__}.")
    else:
        value = float(result.detach()) if isinstance(result, torch.Tensor) else float(result)
        if not math.isclose(value, float(ref_loss.detach()), rel_tol=1e-3, abs_tol=1e-5):
            problems.append(f"your step returned {value:.4g}, but the cross-entropy loss of this batch is different: "
                            "return the loss you back-propagated.")
    for _, p in trainable:
        p.grad = None
    if problems:
        _fail(" ".join(problems))
    # Nothing is returned: nbgrader would read a number shown as a test cell's output as partial credit.


def features(fn: Callable, reference_model: nn.Module, images: torch.Tensor, head_path: str,
             tol: float = 1e-3) -> None:
    """``fn(images)`` equals what ``reference_model.<head_path>`` reads in eval mode.

    The learner's function runs first, on a copy of the images; the reference is computed
    afterwards, in its own function, so no frame the learner's code can inspect holds it.
    """
    __tracebackhide__ = True
    if not callable(fn):
        _fail(f"the feature extractor is not written yet (it is {type(fn).__name__}).")
    with torch.no_grad():
        got = fn(images.clone())
    if not isinstance(got, torch.Tensor):
        _fail(f"the feature extractor returns a {type(got).__name__}, not a tensor.")
    got = got.detach().float().flatten(1)
    if not _matches_reference(got, reference_model, images, head_path, tol):
        _fail("the features differ from what the model's head reads for the same images.")


def _matches_reference(got: torch.Tensor, model: nn.Module, images: torch.Tensor, head_path: str,
                       tol: float) -> bool:
    work = copy.deepcopy(model).eval()
    seen: list[torch.Tensor] = []
    hook = work.get_submodule(head_path).register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        work(images)
    hook.remove()
    want = seen[-1].float().flatten(1).to(got.device)
    if got.shape != want.shape:
        return False
    return bool((got - want).abs().max() <= tol * want.abs().max() + 1e-5)


# ---------------------------------------------------------------------------
# Learning rates
# ---------------------------------------------------------------------------

def smooth(losses: Sequence[float], window: int = 5) -> list[float]:
    """Centred moving average; a non-finite loss and everything after it count as diverged (+inf)."""
    values = [float(v) for v in losses]
    end = next((i for i, v in enumerate(values) if not math.isfinite(v)), len(values))
    out = []
    for i in range(len(values)):
        if i >= end:
            out.append(math.inf)
            continue
        lo, hi = max(0, i - window // 2), min(end, i + window // 2 + 1)
        out.append(sum(values[lo:hi]) / (hi - lo))
    return out


def lr_range(finder_result: Any) -> tuple[float, float]:
    """The learning rates a finder's curve supports, as ``(low, high)`` (see ``tlkit.grading.lr_range``)."""
    lrs = [float(v) for v in getattr(finder_result, "lrs")]
    # tlkit's LRFinderResult keeps the per-batch losses too: smooth those once, not the smoothed ones twice.
    losses = getattr(finder_result, "raw_losses", None) or getattr(finder_result, "losses")
    if len(lrs) != len(losses) or len(lrs) < 5:
        raise ValueError(f"an LR-finder result needs matching lrs and losses (at least 5 points); got {len(lrs)} "
                         f"learning rates and {len(losses)} losses")
    smoothed = smooth(losses)
    i_min = min(range(len(smoothed)), key=lambda i: smoothed[i])
    lr_min = lrs[i_min]
    suggestion = getattr(finder_result, "suggestion", None)
    try:
        suggestion = float(suggestion)
    except (TypeError, ValueError):
        suggestion = math.nan
    if math.isfinite(suggestion) and suggestion > 0:
        low, high = suggestion / 10, min(suggestion * 10, lr_min)
        if high <= suggestion:  # a curve whose minimum sits at the suggestion: the suggestion itself is fine
            high = suggestion * 1.5
    else:
        drop = smoothed[0] - smoothed[i_min]
        i_low = next((i for i in range(i_min + 1) if smoothed[0] - smoothed[i] >= 0.1 * drop), 0)
        low, high = lrs[i_low], lr_min
    low = max(low, lrs[0])
    if low >= high:
        low = max(lrs[0], high / 10)
    return low, high


def lr_finder(result: Any) -> None:
    """``result`` is a real ``tlkit.train.LRFinderResult`` (not a look-alike), with a consistent curve."""
    __tracebackhide__ = True
    cls = type(result)
    if cls.__name__ != "LRFinderResult" or not cls.__module__.startswith("tlkit.") or \
            not hasattr(cls, "__dataclass_fields__"):
        _fail(f"the finder result is a {cls.__module__}.{cls.__qualname__}, not what tlkit.train.lr_find returns: "
              "run the learning-rate finder.")
    lrs, raw = list(result.lrs), list(result.raw_losses)
    if len(lrs) < 5 or len(lrs) != len(raw) or any(b <= a for a, b in zip(lrs, lrs[1:])):
        _fail("the finder result's curve is not one lr_find records (rising learning rates, one loss each).")


def same_curve(result: Any, fresh: Any) -> None:
    """``result`` and ``fresh`` (a second run of the same ``lr_find``) record the same curve."""
    __tracebackhide__ = True
    lr_finder(result)
    a, b = [float(v) for v in result.raw_losses], [float(v) for v in fresh.raw_losses]
    # Lenient: a GPU's kernels are not bit-for-bit repeatable, and the end of a sweep (near divergence)
    # amplifies differences; the first half of the curve and its learning rates must agree.
    half = min(len(a), len(b)) // 2 + 1
    same_lrs = all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(result.lrs[:half], fresh.lrs[:half]))
    if abs(len(a) - len(b)) > 3 or not same_lrs or \
            not all(math.isclose(x, y, rel_tol=0.05, abs_tol=0.02) for x, y in zip(a[:half], b[:half])):
        _fail("the finder result is not what lr_find gives for this model and data: run the finder again, "
              "unchanged, and read your rate off its plot.")


def fresh_module(name: str) -> Any:
    """A private, fresh copy of ``tlkit.<name>``, read from its file next to this one.

    For a hidden test that must *run* tlkit code (lesson 5 re-runs ``lr_find``): a cell can
    replace ``tlkit.train.lr_find``, but not the copy this returns. Its own imports of other
    tlkit modules still come from ``sys.modules`` (their names are what the static scan watches).

    >>> _fresh = _v.fresh_module("train").lr_find(model, data, steps=30)  # doctest: +SKIP
    """
    import importlib.util
    import os
    import sys

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *name.split(".")) + ".py"
    spec = importlib.util.spec_from_file_location(f"tlkit._fresh_{name.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "tlkit"
    sys.modules[spec.name] = module  # dataclasses look the module up while it loads; removed right after
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def learning_rate(lr: Any, finder_result: Any) -> None:
    """``lr`` is a positive number in :func:`lr_range` of the finder's curve."""
    __tracebackhide__ = True
    if isinstance(lr, torch.Tensor) and lr.numel() == 1:
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        _fail(f"the learning rate is not written yet, or not a positive number: {lr!r}.")
    low, high = lr_range(finder_result)
    lrs = [float(v) for v in finder_result.lrs]
    if not (lrs[0] <= lr <= lrs[-1] and low <= lr < high):
        _fail(f"lr = {lr:g} is not in the range the LR finder's curve supports.")
