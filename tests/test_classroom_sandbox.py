"""Hostile submissions, graded in parallel in the sandbox: each is contained and recorded, and the
other students' grades are unaffected.

One ``tlkit autograde`` run (2 workers) on a tiny two-exercise assignment grades: a correct
submission, an infinite loop, a 50 GB allocation, a kernel that kills itself (after code that
reads the checker's frames), and a snooper that tries the network (a listener this test runs on 127.0.0.1,
outside the sandbox), the solutions in ``source/``, another student's folder, and ``rm -rf ~``.
No traffic leaves this machine: the only address used is 127.0.0.1.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import time
import threading

import pytest

from classroom_helpers import LESSON, submit, tiny_course
from tlkit.classroom import Limits, autograde
from tlkit.classroom.sandbox import probe

pytestmark = pytest.mark.slow


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 outside the sandbox; records every connection it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_hostile_submissions_are_contained_and_recorded(tmp_path, listener):
    isolation = probe()
    if not (isolation.network and isolation.own_user and isolation.mounts):
        pytest.skip("the full sandbox needs root with network and mount namespaces:\n" + isolation.describe())
    port, accepted = listener
    # sanity: the listener answers outside the sandbox
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    deadline = time.monotonic() + 30
    while not accepted and time.monotonic() < deadline:  # the listener's thread accepts it a moment later
        time.sleep(0.05)
    assert len(accepted) == 1, "the listener did not see the test's own connection"
    accepted.clear()  # only now: from here on, any connection came from a sandbox

    course = tiny_course(tmp_path / "course", cell_timeout=5)
    source_nb = course / "source" / LESSON / f"{LESSON}.ipynb"
    alice = submit(course, "alice", {})
    submit(course, "looper", {"ex1": "while True:\n    pass"})
    submit(course, "hog", {"ex1": "hog = bytearray(50 * 10**9)"})
    submit(course, "crasher", {"ex1": "import inspect\nframes = inspect.stack()\ndef double(x):\n    return 2 * x",
                               "ex2": "import os\nos.abort()"})
    submit(course, "snoop", {}, extra=[
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)",
        f"open({str(source_nb)!r}).read()",
        "open('../source/tiny/tiny.ipynb').read()",
        f"import os\nos.listdir({str(alice)!r})",
        f"import shutil\nshutil.rmtree({str(alice)!r})",
        "import os, subprocess\nsubprocess.run('rm -rf ~', shell=True)\nos.listdir(os.path.expanduser('~'))",
    ])
    assert os.stat(source_nb).st_mode & 0o004, "the solutions must be world-readable here, so the sandbox is what protects them"

    # the snooper's cells come after the last test, which autograde skips by default: run them, the box
    # must hold wherever the code sits
    report = autograde(course, LESSON, workers=2, limits=Limits(timeout=90, memory_gb=2), progress=False, run_all=True)
    by = {r.student: r for r in report.results}
    scores = {s: {g: v[0] for g, v in r.scores.items()} for s, r in by.items()}

    assert scores["alice"] == {"ex1_test": 1.0, "ex2_test": 1.0} and by["alice"].status == "ok"
    # the loop is interrupted at its cell; the exercise after it still runs and scores
    assert by["looper"].status == "timeout" and "timed out at cell 3" in by["looper"].message
    assert scores["looper"] == {"ex1_test": 0.0, "ex2_test": 1.0}
    # 50 GB: refused by the memory limit, recorded; the other exercise scores
    assert by["hog"].status == "memory" and "cell 3" in by["hog"].message
    assert scores["hog"] == {"ex1_test": 0.0, "ex2_test": 1.0}
    # a dead kernel: what ran before is scored, what follows is not; tampering is found by the
    # static scan and shown to the instructor and to the student
    assert by["crasher"].status == "crashed" and "cell 6" in by["crasher"].message
    assert scores["crasher"] == {"ex1_test": 1.0, "ex2_test": 0.0}
    assert [f.kind for f in by["crasher"].findings] == ["frame inspection"]
    review = json.loads((course / "autograded" / "crasher" / LESSON / f"{LESSON}.ipynb").read_text())["cells"][0]
    assert "inspect.stack()" in review["source"] and "Automatic review" in review["source"]

    # the snooper: full marks for its answers, every attempt failed inside the box and is recorded
    assert scores["snoop"] == {"ex1_test": 1.0, "ex2_test": 1.0}
    errors = "\n".join(by["snoop"].errors)
    assert not accepted, "a connection from the sandbox reached the listener outside it"
    assert "cell 8: OSError: [Errno 101] Network is unreachable" in errors, errors
    assert f"cell 9: PermissionError: [Errno 13] Permission denied: '{source_nb}'" in errors, errors
    assert "cell 10: FileNotFoundError" in errors, errors
    assert f"cell 11: PermissionError: [Errno 13] Permission denied: '{alice}'" in errors, errors
    assert "cell 12: PermissionError" in errors, errors
    assert "cell 13: FileNotFoundError" in errors, errors  # its own home is gone, nothing else
    assert (alice / f"{LESSON}.ipynb").is_file() and source_nb.is_file()

    # the course gradebook holds all of it; the report files say the same
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission(LESSON, "alice").score == 2.0
        assert gb.find_submission(LESSON, "looper").score == 1.0
        assert gb.find_submission(LESSON, "crasher").score == 1.0
    with open(course / "reports" / LESSON / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["hog"]["status"] == "memory" and rows["crasher"]["tamper_findings"] == "1"
    assert "inspect.stack()" in (course / "reports" / LESSON / "report.md").read_text()
