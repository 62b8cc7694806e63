"""Does the advisor's recommendation win the race? Measured on real datasets, two sizes each, several seeds.

For every dataset, training size and seed: ``advisor.recommend`` measures the training images
(probes per stage, LEEP, NCE) and picks a strategy; ``advisor.race`` then trains every strategy
from the same ImageNet weights for the same budget, chooses the winner on the **validation**
split and scores every strategy on the **test** split. The advice *agrees* when it wins or ties
(within one standard error of the winner, on validation). The test accuracies show what each
choice was worth on images no choice saw.

Prints one line per race, then a Markdown table and the agreement rate for course/README.md
("How far we checked the stories"); ``--json`` also writes every number.

Sizes: ``small`` is a few dozen images per class; ``large`` is as many as the dataset and a CPU
allow (``--large``, capped by what the training split holds). Images are fed small on a CPU
(photos at ``--photo-size``, MedMNIST and digits at 32 px), as the lessons do.

Example (from the repository root; on 2 CPU cores the 30 races took 51 minutes, see bench/README.md):

    TLKIT_MIRROR=../shared/datasets .venv/bin/python bench/advisor_agreement.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

import tlkit
from tlkit import advisor, datasets

# name: (image size on a CPU, "small" per class, "large" per class (None: all), test images per class (None: all))
DATASETS = {
    "hymenoptera": ("photo", 20, None, None),
    "flowers": ("photo", 20, 200, 60),
    "pneumoniamnist": (32, 20, 1000, 150),
    "retinamnist": (32, 20, None, None),
    "digits": (32, 20, None, None),
}
STRATEGIES = ("feature_extraction", "early_features", "fine_tune_top", "fine_tune_all", "retrain_all")


def _capped(ds, per_class, seed):
    """At most ``per_class`` images of each class (all of a smaller class), drawn with ``seed``."""
    if per_class is None:
        return ds
    smallest = min(ds.counts().values())
    if per_class <= smallest:
        return datasets.subset(ds, per_class=per_class, seed=seed)
    return ds  # the split holds fewer: use it whole


def run_one(name: str, size: str, seed: int, *, photo_size: int, budget: int, val_per_class: int,
            device=None) -> dict:
    pixels, small, large, test_cap = DATASETS[name]
    image_size = photo_size if pixels == "photo" else pixels
    train = datasets.load(name, "train", progress=False)
    train = _capped(train, small if size == "small" else large, seed)
    val = _capped(datasets.load(name, "val", progress=False), val_per_class, seed)
    test = _capped(datasets.load(name, "test", progress=False), test_cap, seed)
    model = tlkit.load_backbone("efficientnet_lite0", image_size=image_size)
    start = time.perf_counter()
    advice = advisor.recommend(model, train, val, seed=seed, device=device, progress=False)
    race = advisor.race(model, train, val, strategies=STRATEGIES, budget=budget, test=test, advice=advice,
                        batch_size=32, seed=seed, device=device, progress=False)
    tests = {e.strategy: e.test_acc for e in race.entries}
    return {
        "dataset": name, "size": size, "seed": seed, "image_size": image_size,
        "per_class": round(len(train) / len(train.classes)), "n_val": len(val), "n_test": len(test),
        "band": advisor.size_band(len(train) / len(train.classes)),
        "similarity": round(advice.measurement.leep_similarity, 2), "best_stage": advice.measurement.best_stage,
        "recommended": advice.strategy, "winner": race.winner, "tied": race.tied, "agrees": bool(race.agrees),
        "val": race.accuracies, "test": tests, "seconds": round(time.perf_counter() - start, 1),
    }


def markdown_table(rows: list[dict]) -> str:
    """The table of course/README.md ("The advisor against the race"), one line per dataset and size, then the agreement rate.

    Test accuracies per seed: the recommendation's, the validation winner's, and the best of all strategies'.
    """
    lines = ["| dataset | per class (band) | LEEP | recommended | winner on val, per seed | agrees | "
             "test accuracy: recommended / val winner / best of all |", "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["size"]), []).append(r)
    for (name, _), group in groups.items():
        tests = "; ".join(f"{r['test'][r['recommended']]:.1%} / {r['test'][r['winner']]:.1%} / {max(r['test'].values()):.1%}"
                          for r in group)
        lines.append(f"| {name} | {group[0]['per_class']} ({group[0]['band']}) | "
                     f"{', '.join(format(r['similarity'], '.2f') for r in group)} | "
                     f"{', '.join(sorted({r['recommended'] for r in group}))} | {', '.join(r['winner'] for r in group)} | "
                     f"{sum(r['agrees'] for r in group)}/{len(group)} | {tests} |")
    agree = sum(r["agrees"] for r in rows)
    lines.append(f"\nagreement (a win or a tie within one standard error on val): {agree}/{len(rows)} = "
                 f"{agree / max(len(rows), 1):.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=["small", "large"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=3, help="epochs of fine-tuning per strategy")
    parser.add_argument("--photo-size", type=int, default=112, help="pixels for the photo datasets")
    parser.add_argument("--val-per-class", type=int, default=60, help="validation images per class (at most)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="also write every number to this file")
    parser.add_argument("--table-from", default=None, metavar="JSON",
                        help="run nothing: print the table from the --json file of an earlier run")
    args = parser.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            print(markdown_table(json.load(f)))
        return 0

    device, why = tlkit.default_device() if args.device is None else (torch.device(args.device), "--device")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {device} ({why}); torch {torch.__version__}; budget {args.budget} epochs, "
          f"photos at {args.photo_size} px", flush=True)
    rows = []
    for name in args.datasets:
        for size in args.sizes:
            for seed in args.seeds:
                row = run_one(name, size, seed, photo_size=args.photo_size, budget=args.budget,
                              val_per_class=args.val_per_class, device=args.device)
                rows.append(row)
                print(f"{name:15} {size:5} seed {seed}: {row['per_class']:4}/class ({row['band']}), "
                      f"recommended {row['recommended']:18} winner {row['winner']:18} agrees {row['agrees']!s:5} "
                      f"test: rec {row['test'][row['recommended']]:.3f} win {row['test'][row['winner']]:.3f}  "
                      f"({row['seconds']:.0f} s)", flush=True)
                if args.json:  # after every race, so a long run that is stopped keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump(rows, f, indent=1)
    print("\n" + markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
