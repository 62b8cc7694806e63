"""Run the candidate strategies for the same budget and see which won: :func:`race` -> :class:`RaceResult`.

Example:
    >>> result = race("efficientnet_lite0", train, val, budget=3)  # doctest: +SKIP
    >>> result.winner, result.agrees  # doctest: +SKIP
    ('feature_extraction', True)
"""
from __future__ import annotations

import copy
import html
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .._runtime import stage_names
from ..backbones import backbone_info, replace_head
from ..errors import ArgumentError, DatasetError
from ..features import Features, linear_probe
from ..history import History
from ..train import evaluate, fit

from ..freezing import freeze, param_groups, unfreeze
from ..datasets.splits import stratified_split
from .measurement import _load, stage_features
from .recommendation import recommend
from .decision_table import _HEAD_LR, PENULTIMATE, STRATEGIES, Advice, _after, _check_int, _plan

__all__ = ["RaceEntry", "RaceResult", "race"]


@dataclass
class RaceEntry:
    """One strategy's run in a race."""

    strategy: str
    val_acc: float
    best_val_acc: float
    seconds: float
    trainable: int
    setting: str
    history: Any = field(repr=False)
    test_acc: float | None = None


@dataclass
class RaceResult:
    """The strategies run side by side for the same budget, and which won.

    Attributes:
        entries: one :class:`RaceEntry` per strategy, in the order run.
        budget: epochs of fine-tuning each fine-tuning strategy got.
        n_val: validation images (sets the noise level of the accuracies).
        advice: the recommendation the race checks (None if it was not given one).
        n_test: test images, when the race was given a test split (0 otherwise).

    The winner is chosen on the validation split; with a test split, :attr:`test_accuracy`
    reports the winner on images that played no part in choosing it.
    """

    backbone: str
    dataset: str
    entries: list[RaceEntry]
    budget: int
    n_val: int
    advice: Advice | None = None
    n_test: int = 0

    @property
    def accuracies(self) -> dict[str, float]:
        return {e.strategy: e.val_acc for e in self.entries}

    @property
    def winner(self) -> str:
        """The strategy with the highest final validation accuracy (ties: the cheaper, listed first)."""
        return max(self.entries, key=lambda e: e.val_acc).strategy

    @property
    def noise(self) -> float:
        """Binomial standard error of the winner's accuracy on ``n_val`` images."""
        p = max(e.val_acc for e in self.entries)
        return math.sqrt(max(p * (1 - p), 1e-4) / max(self.n_val, 1))

    @property
    def test_accuracy(self) -> float | None:
        """The winner's accuracy on the test split (None without one): the number to report."""
        return next(e.test_acc for e in self.entries if e.strategy == self.winner) if self.n_test else None

    @property
    def tied(self) -> list[str]:
        """Strategies within one standard error of the winner: the race cannot tell them apart."""
        top = max(e.val_acc for e in self.entries)
        return [e.strategy for e in self.entries if e.val_acc >= top - self.noise]

    @property
    def agrees(self) -> bool | None:
        """Did the recommended strategy win (or tie with the winner)? None without advice or if it did not run."""
        if self.advice is None or self.advice.strategy not in self.accuracies:
            return None
        return self.advice.strategy in self.tied

    @property
    def verdict(self) -> str:
        top = self.accuracies[self.winner]
        text = f"{self.winner} won with {top:.3f} validation accuracy (noise +-{self.noise:.3f} on {self.n_val} images)"
        others = [s for s in self.tied if s != self.winner]
        if others:
            text += f"; {', '.join(others)} within the noise"
        if self.n_test:
            text += f"; on the test split ({self.n_test} images, not used to choose) it scores {self.test_accuracy:.3f}"
        if self.advice is None:
            return text + "."
        rec = self.advice.strategy
        if rec not in self.accuracies:
            return text + f". The recommendation, {rec}, was not in the race."
        if self.agrees:
            return text + f". The race AGREES with the recommendation ({rec})."
        gap = top - self.accuracies[rec]
        return (text + f". The race DISAGREES with the recommendation: {rec} reached {self.accuracies[rec]:.3f}, "
                f"{gap:.3f} below the winner. Trust the experiment for this budget, and check a longer one.")

    def __str__(self) -> str:
        lines = [f"Race on {self.dataset} with {self.backbone}: {self.budget} epoch(s) of fine-tuning each"]
        width = max(len(e.strategy) for e in self.entries)
        for e in self.entries:
            star = " *" if e.strategy == self.winner else "  "
            rec = "  (recommended)" if self.advice is not None and e.strategy == self.advice.strategy else ""
            test = f"  test acc {e.test_acc:.3f}" if e.test_acc is not None else ""
            lines.append(f"{star}{e.strategy:<{width}}  val acc {e.val_acc:.3f}{test}  {e.seconds:6.1f} s  "
                         f"{e.trainable:>10,} trainable  {e.setting}{rec}")
        lines.append(self.verdict)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        rows = ""
        for e in self.entries:
            style = "font-weight:bold;background:#e8f4ea" if e.strategy == self.winner else ""
            rec = " (recommended)" if self.advice is not None and e.strategy == self.advice.strategy else ""
            rows += (f"<tr style='{style}'><td style='padding:2px 8px'>{html.escape(e.strategy + rec)}</td>"
                     f"<td style='padding:2px 8px'>{e.val_acc:.3f}</td>"
                     + (f"<td style='padding:2px 8px'>{e.test_acc:.3f}</td>" if self.n_test else "")
                     + f"<td style='padding:2px 8px'>{e.seconds:.1f} s"
                     f"</td><td style='padding:2px 8px'>{e.trainable:,}</td><td style='padding:2px 8px;color:#666'>"
                     f"{html.escape(e.setting)}</td></tr>")
        color = "#1b5e20" if self.agrees else ("#b71c1c" if self.agrees is False else "#333")
        return (f"<div style='border:1px solid #ccc;border-radius:6px;padding:10px;max-width:820px'>"
                f"<b>Race</b> on {html.escape(self.dataset)} with {html.escape(self.backbone)}: {self.budget} epoch(s) "
                f"of fine-tuning each<table style='border-collapse:collapse'><tr><th>strategy</th><th>val acc</th>"
                f"{'<th>test acc</th>' if self.n_test else ''}<th>time</th><th>trainable</th><th>setting</th></tr>{rows}</table>"
                f"<p style='color:{color};margin:4px 0'>{html.escape(self.verdict)}</p></div>")

    def plot(self):
        """Validation accuracy per epoch for each strategy, and the final accuracies against time."""
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
        for e in self.entries:
            acc = e.history.val_acc
            if len(acc) == 1:  # a converged linear probe: one number, drawn across the budget
                ax1.plot([1, max(self.budget, 2)], acc * 2, "--", label=f"{e.strategy} (probe)")
            else:
                ax1.plot(range(1, len(acc) + 1), acc, "o-", ms=3, label=e.strategy)
            ax2.scatter([e.seconds], [e.val_acc], s=60)
            ax2.annotate(e.strategy, (e.seconds, e.val_acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("validation accuracy")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.set_xlabel("seconds")
        ax2.set_ylabel("final validation accuracy")
        ax2.grid(alpha=0.3)
        fig.suptitle(f"Race on {self.dataset}: {self.verdict.split('.')[0]}", fontsize=9)
        fig.tight_layout()
        plt.close(fig)  # a notebook shows the returned figure once, not twice
        return fig


def _split(dataset, fraction: float, seed: int):
    """A stratified (train, val) split of an ImageDataset (``tlkit.datasets.stratified_split``)."""
    targets = list(dataset.targets)
    for c, name in enumerate(dataset.classes):
        n = targets.count(c)
        if n < 2:
            raise DatasetError(f"class {name!r} has only {n} image(s): too few to hold some out for validation. "
                               "Pass val=... or add images.")
    kept, held = stratified_split(targets, fraction, seed)
    return dataset._subset(kept), dataset._subset(held)


def _stage_or_penultimate(model: nn.Module, ds, stage: str | None, device, progress: bool):
    """Features of one stage (None: penultimate) as ``tlkit.features.Features``, sharing measure's cache."""
    pen, found = stage_features(model, ds, [] if stage is None else [stage], device=device, progress=progress)
    if stage is None:
        return pen
    return Features(found[stage], torch.as_tensor(list(ds.targets), dtype=torch.long), list(ds.classes), stage)


def _race_plan(strategy: str, names: Sequence[str], advice: Advice) -> tuple[str, str | None]:
    """(freeze_until, feature_stage) for one strategy of a race: the advice's own settings for its
    strategy; for the others, the measured stages where there is a measurement, else the table's defaults."""
    if strategy == advice.strategy:
        return advice.freeze_until, advice.feature_stage
    until, stage = _plan(strategy, names)
    m = advice.measurement
    if m is not None and m.best_stage != PENULTIMATE:
        if strategy == "early_features":
            stage = m.best_stage
        elif strategy == "fine_tune_top" and advice.similarity == "different":
            until = _after(names, m.best_stage)
    return until, stage


def race(model: str | nn.Module, dataset, val=None,
         strategies: Sequence[str] = ("feature_extraction", "fine_tune_top", "fine_tune_all"), budget: int = 3, *,
         test=None, advice: Advice | None = None, C: float = 1.0, lr: float = _HEAD_LR, augment: str = "light",
         batch_size: int = 32, seed: int = 0, device=None, progress: bool = True) -> RaceResult:
    """Run candidate strategies for the same budget and report which actually won.

    Args:
        model: a backbone name or a model from ``tlkit.load_backbone`` (a fresh copy of its
            weights is used for every strategy).
        dataset, val: training and validation ImageDatasets (without ``val``, 20% of each
            class of ``dataset`` is held out, seeded).
        strategies: keys of :data:`STRATEGIES`; the recommended strategy is added if missing.
        budget: epochs of fine-tuning for every fine-tuning strategy.
        test: a test ImageDataset (same classes). Every strategy is also scored on it, after the
            race; the winner is still chosen on ``val`` alone, and :attr:`RaceResult.test_accuracy`
            is the figure to report.
        advice: the recommendation to check (default: ``recommend(model, dataset, val)``);
            its freeze point and feature stage are used for its own strategy.
        C: inverse L2 strength of the linear classifier of the feature strategies. They run
            ``tlkit.linear_probe`` (standardised features, logistic regression trained to
            convergence: the same classifier ``measure`` uses) on features computed once, so
            they cost one forward pass; the time column shows what each strategy really cost.
        lr: head learning rate; fine-tuned body stages get ``lr / 10`` (``retrain_all``: ``lr``).
        augment: augmentation preset for the fine-tuning strategies.

    Every strategy is scored by its *final* validation accuracy (no picking the best epoch on
    the validation set). Differences within one standard error are called a tie.

    >>> result = race("efficientnet_lite0", train, val, budget=3)  # doctest: +SKIP
    >>> result.winner, result.agrees  # doctest: +SKIP
    ('feature_extraction', True)
    """
    from sklearn.metrics import log_loss

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ArgumentError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    budget = _check_int(budget, "budget (epochs of fine-tuning)", 1)
    if test is not None and list(getattr(test, "classes", [])) != list(dataset.classes):
        raise ArgumentError(f"the test split's classes {list(getattr(test, 'classes', []))} differ from the training "
                            f"data's {list(dataset.classes)}: pass the test split of the same dataset "
                            "(datasets.load(name, 'test')).")
    if val is None:
        dataset, val = _split(dataset, 0.2, seed)
    base = _load(model)
    name = backbone_info(base).name
    names = stage_names(base)
    if advice is None:
        advice = recommend(base, dataset, val, device=device)
    strategies = list(strategies)
    if advice.strategy not in strategies:  # the recommendation always runs, so the race can check it
        strategies.append(advice.strategy)
    num_classes = len(dataset.classes)
    entries = []
    for strategy in strategies:
        start = time.perf_counter()
        test_acc = None
        label = strategy
        if strategy in ("feature_extraction", "early_features"):
            stage = _race_plan(strategy, names, advice)[1]
            ftr, fva = (_stage_or_penultimate(base, ds, stage, device, progress) for ds in (dataset, val))
            probe = linear_probe(ftr, fva, C=C)
            labels = list(range(num_classes))
            losses = [log_loss(f.y.numpy(), probe.model.predict_proba(f.x.numpy()), labels=labels) for f in (ftr, fva)]
            history = History(label=f"{label} (linear probe)", train_loss=[losses[0]], train_acc=[probe.train_accuracy],
                              val_loss=[losses[1]], val_acc=[probe.accuracy], epoch_time=[time.perf_counter() - start])
            trainable = (ftr.x.shape[1] + 1) * num_classes
            elapsed = time.perf_counter() - start
            if test is not None:
                fte = _stage_or_penultimate(base, test, stage, device, progress)
                test_acc = float(probe.model.score(fte.x.numpy(), fte.y.numpy()))
            setting = f"logistic regression on {stage or 'penultimate'} features (C={C:g}), trained to convergence"
        else:
            model = replace_head(copy.deepcopy(base), num_classes)
            unfreeze(model)
            until = _race_plan(strategy, names, advice)[0]
            freeze(model, until=until)
            body_lr = lr if strategy == "retrain_all" else lr / 10
            groups = param_groups(model, lr, body_lr=body_lr)
            history = fit(model, dataset, val, epochs=budget, param_groups=groups, batch_size=batch_size,
                          schedule="cosine", augment=augment, seed=seed, device=device, progress=progress,
                          label=label)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            elapsed = time.perf_counter() - start
            if test is not None:
                test_acc = evaluate(model, test, batch_size=batch_size, device=device, progress=progress)["accuracy"]
            setting = f"train from {until}, lr head {lr:g} body {body_lr:g}, cosine, augment {augment!r}"
            del model
        acc = history.val_acc[-1] if history.val_acc else float("nan")
        entries.append(RaceEntry(strategy, acc, history.best_val_acc or acc, elapsed,
                                 trainable, setting, history, test_acc))
    return RaceResult(name, getattr(dataset, "name", "dataset"), entries, budget, len(val), advice,
                      len(test) if test is not None else 0)
