"""``tlkit autograde`` on a Dask cluster, then resumed from the command line; its input errors.

A ``LocalCluster`` of 2 worker processes grades two submissions of a tiny assignment; the command
line run after it skips both (already graded), and regrades only the one whose files changed.
"""
from __future__ import annotations

import pytest

from classroom_helpers import LESSON, submit, tiny_course
from tlkit import ArgumentError
from tlkit.classroom import Limits, autograde


def _scores(course, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {g.name: g.score for g in gb.find_submission_notebook(LESSON, LESSON, student).grades}


def test_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(ArgumentError, match=r"course='.*': no nbgrader_config.py there"):
        autograde(tmp_path, LESSON)
    with pytest.raises(ArgumentError, match=r"workers=0: expected a whole number of parallel workers"):
        autograde(tmp_path, LESSON, workers=0)
    with pytest.raises(ArgumentError, match=r"Limits\(memory_gb=-1\): expected a positive number"):
        Limits(memory_gb=-1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_dask_cluster_then_resume_from_the_command_line(tmp_path, capsys):
    distributed = pytest.importorskip("distributed", reason="the classroom extra (dask.distributed) is not installed")
    import tlkit.cli

    course = tiny_course(tmp_path / "course")
    with pytest.raises(ArgumentError, match="lesson 'nope' is not in the gradebook .*nbgrader generate_assignment nope"):
        autograde(course, "nope", progress=False)
    assert not (course / "reports").exists()

    submit(course, "alice", {})
    bob = submit(course, "bob", {"ex1": None, "ex2": "answer = 41"})
    limits = Limits(timeout=120, memory_gb=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = autograde(course, LESSON, scheduler=cluster.scheduler_address, limits=limits, progress=False)
    assert sorted(r.student for r in report.results) == ["alice", "bob"]
    assert _scores(course, "alice") == {"ex1_test": 1.0, "ex2_test": 1.0}
    assert _scores(course, "bob") == {"ex1_test": 0.0, "ex2_test": 0.0}

    args = ["autograde", LESSON, "--course", str(course), "--workers", "2", "--timeout", "120", "--memory", "2"]
    assert tlkit.cli.main(args) == 0
    assert "skipping 2 already graded submission(s)" in capsys.readouterr().out

    submit(course, "bob", {"ex1": None})  # bob resubmits: ex2 now right
    assert (bob / f"{LESSON}.ipynb").is_file()
    assert tlkit.cli.main(args) == 0
    out = capsys.readouterr().out
    assert "skipping 1 already graded submission(s) (use --force to regrade): alice" in out
    assert "grading 1 submission(s) of tiny with 2 worker(s)" in out
    assert _scores(course, "bob") == {"ex1_test": 0.0, "ex2_test": 1.0}
    assert _scores(course, "alice") == {"ex1_test": 1.0, "ex2_test": 1.0}
