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
