"""``tlkit warm-cache``: finds the course's datasets, fills the data cache, says how to share it read-only."""
from __future__ import annotations

from pathlib import Path

import pytest

import tlkit.cli
from tlkit import ArgumentError
from tlkit.classroom.warm import course_datasets, warm_cache

COURSE = Path(__file__).resolve().parents[1] / "course"


def test_course_datasets_are_the_ones_the_lessons_load():
    names = course_datasets(COURSE / "source")
    assert "hymenoptera" in names and "digits" in names


def test_warm_cache_command_fills_and_explains(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TLKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    assert tlkit.cli.main(["warm-cache", "--datasets", "digits"]) == 0
    out = capsys.readouterr().out
    assert "digits: ready: 1259 train + 269 val + 269 test images" in out
    assert f"chmod -R a+rX,go-w {tmp_path / 'data'} {tmp_path / 'cache'}" in out
    assert "tlkit autograde LESSON --workers N --data" in out


def test_unknown_dataset_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_DATA", str(tmp_path / "data"))
    with pytest.raises(ArgumentError, match=r"--datasets: unknown dataset\(s\) \['nope'\]; known: hymenoptera"):
        warm_cache(["nope"], progress=False)
    assert not (tmp_path / "data").exists()


def _lesson(course: Path, name: str, marker: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    solution = {"nbgrader": {"grade": False, "solution": True, "grade_id": "ex", "locked": False, "schema_version": 3}}
    test = {"nbgrader": {"grade": True, "solution": False, "grade_id": "ex_test", "points": 1, "locked": True,
                         "schema_version": 3}}
    nb = new_notebook(cells=[
        new_code_cell("import tlkit\nfrom tlkit import datasets\n"
                      "ds = datasets.subset(datasets.load('digits', 'val'), per_class=2, seed=0)"),
        new_code_cell("f = tlkit.extract_features(tlkit.load_backbone(image_size=32), ds, progress=False)",
                      metadata=solution),
        new_code_cell("assert f.x.shape[0] == 20", metadata=test),
        new_code_cell(f"open({str(marker)!r}, 'w').close()"),  # after the last graded cell: not run
    ])
    (course / "source" / name).mkdir(parents=True)
    nbformat.write(nb, course / "source" / name / f"{name}.ipynb")


@pytest.mark.slow
def test_warm_features_runs_the_graded_part_and_fills_the_feature_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TLKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "tail-ran"
    _lesson(tmp_path / "course", "01-tiny", marker)
    assert tlkit.cli.main(["warm-cache", "--datasets", "digits", "--course", str(tmp_path / "course"),
                           "--features"]) == 0
    out = capsys.readouterr().out
    assert "01-tiny: ready: 3 cells run in" in out
    assert any((tmp_path / "cache" / "features").rglob("*")), "no features were cached"
    assert not marker.exists(), "the cell after the last graded cell ran"
    with pytest.raises(ArgumentError, match=r"--lessons: no lesson \['02-nope'\]"):
        from tlkit.classroom import warm_features
        warm_features(["02-nope"], course=tmp_path / "course", progress=False)
