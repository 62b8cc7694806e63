"""The classroom deployment (classroom/), for real: a JupyterHub class with an instructor and students.

* the hub configuration reads its roster, makes nbgrader's course groups and says what is wrong
  with a bad roster; ``make_exchange.sh`` makes a sticky, world-writable exchange and refuses one
  students could not reach (any user);
* the whole nbgrader round trip with separate Linux accounts (root only, as on CI): a real
  JupyterHub and configurable-http-proxy on 127.0.0.1, users and tokens made through the hub's
  REST API, each server running as its own account with its role's nbgrader tools; the instructor
  releases a two-exercise quiz, three students fetch it, work (right, blank, wrong) and submit
  through their servers' Assignments API, the instructor collects, autogrades and releases
  feedback, each student fetches their own, and no student can read or fetch another's.

Everything the round trip makes (accounts, home folders, the hub, the proxy, servers) is removed
in the fixture's teardown, also when the test fails. The autograde step is :func:`autograde`.
"""
from __future__ import annotations

import json
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
import pytest
from traitlets.config.loader import PyFileConfigLoader

from hub_helpers import CLASSROOM, COURSE, HUB_CONFIG, ROOT, Classroom, missing_requirement
from nbgrader_helpers import type_answers

QUIZ = Path(__file__).resolve().parent / "notebooks" / "classroom_quiz"
ASSIGNMENT = QUIZ.name
POINTS = {"ex1_double_test": 2, "ex2_mean_test": 3}
# What each student types: the solutions, nothing, and a plausible mistake in the second exercise.
WORK = {"ann": {"ex1_double": None, "ex2_mean": None},
        "ben": {},
        "cat": {"ex1_double": None, "ex2_mean": "return sum(xs) / (len(xs) - 1)"}}
SCORES = {"ann": 5.0, "ben": 0.0, "cat": 2.0}
STUDENT_ONLY_HIDDEN = {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                       "@jupyter/nbgrader:course-list"}


# ----------------------------------------------------------------------------------------------
# The deployment's files, checked as any user
# ----------------------------------------------------------------------------------------------

def _load_hub_config(monkeypatch, roster: Path):
    monkeypatch.setenv("TLKIT_ROSTER", str(roster))
    monkeypatch.delenv("TLKIT_COURSE", raising=False)
    return PyFileConfigLoader(HUB_CONFIG.name, path=str(CLASSROOM)).load_config()


def test_hub_config_makes_nbgraders_course_groups_from_the_roster(monkeypatch):
    config = _load_hub_config(monkeypatch, CLASSROOM / "roster.example.txt")
    assert config.JupyterHub.load_groups == {"formgrade-tlkit": {"users": ["teacher"]},
                                             "nbgrader-tlkit": {"users": ["alice", "bob", "carol"]}}
    assert config.Authenticator.allowed_users == {"teacher", "alice", "bob", "carol"}
    assert config.Authenticator.admin_users == set()
    (role,) = config.JupyterHub.load_roles
    assert role["groups"] == ["formgrade-tlkit"] and "groups!group=nbgrader-tlkit" in role["scopes"]
    # Every server may read its own user's groups: nbgrader's JupyterHubAuthPlugin needs them.
    assert "read:users:groups!user" in config.Spawner.server_token_scopes


def test_hub_config_names_the_bad_roster_line(monkeypatch, tmp_path):
    roster = tmp_path / "roster.txt"
    roster.write_text("instructor teacher\nstudnet alice\n")
    with pytest.raises(SystemExit, match=r"roster.txt, line 2: expected 'instructor NAME' or 'student NAME', "
                                         r"got 'studnet alice'"):
        _load_hub_config(monkeypatch, roster)
    with pytest.raises(SystemExit, match=r"no roster at .*missing.txt\. Copy .*roster.example.txt"):
        _load_hub_config(monkeypatch, tmp_path / "missing.txt")


def test_make_exchange_is_sticky_and_refuses_an_unreachable_place(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="tlkit-exchange-"))
    try:
        base.chmod(0o755)
        out = subprocess.run([str(CLASSROOM / "make_exchange.sh"), str(base / "srv" / "exchange")],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert (base / "srv" / "exchange").stat().st_mode & 0o7777 == 0o1777
        base.chmod(0o700)  # students could not get through this folder
        out = subprocess.run([str(CLASSROOM / "make_exchange.sh"), str(base / "other")],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and f"{base} is not searchable by other users" in out.stderr
        assert "Nothing was created" in out.stderr and not (base / "other").exists()
    finally:
        shutil.rmtree(base)


# ----------------------------------------------------------------------------------------------
# The round trip: real accounts, a real hub (tests/hub_helpers.py)
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def classroom():
    reason = missing_requirement()
    if reason:
        pytest.skip(reason)
    room = Classroom()
    try:
        yield room
    finally:
        room.close()
        left = [n for n in room.users if subprocess.run(["id", n], capture_output=True).returncode == 0]
        assert not left, f"test accounts left behind: {left}"
        for folder, saved in room.saved_acls.items():
            now = subprocess.run(["getfacl", "--absolute-names", str(folder)], capture_output=True, text=True).stdout
            assert now == saved, f"the ACL of {folder} was not restored:\n{now}"


# ---- autograde: tlkit's parallel, sandboxed autograder, run by the instructor --------------
def autograde(room: Classroom, course_dir: Path) -> None:
    """Autograde every collected submission of the quiz, as the instructor, in the course folder,
    with ``tlkit autograde`` (tlkit/classroom/: each submission in its own sandboxed process)."""
    room.run_as("teach", "tlkit", "autograde", ASSIGNMENT, "--workers", "2", cwd=course_dir, timeout=600)
# -----------------------------------------------------------------------------------------------


def _score_line(who: str) -> str:
    """The feedback's heading line with ``who``'s total, e.g. ``classroom_quiz (Score: 5.0 / 5.0)``."""
    return f"{ASSIGNMENT} (Score: {SCORES[who]:.1f} / {sum(POINTS.values()):.1f})"


def _page_config(html: str) -> dict:
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no jupyter-config-data in the JupyterLab page"
    return json.loads(match.group(1))


def _assignments(room: Classroom, who: str) -> list[dict]:
    reply = room.server("GET", who, f"assignments?course_id={COURSE}")
    assert reply.status_code == 200, reply.text[:2000]
    body = reply.json()
    assert body["success"], body.get("value")
    return [a for a in body["value"] if a["assignment_id"] == ASSIGNMENT]


def _assignment_action(room: Classroom, who: str, action: str) -> list[dict]:
    reply = room.server("POST", who, f"assignments/{action}", json={"course_id": COURSE, "assignment_id": ASSIGNMENT})
    assert reply.status_code == 200, reply.text[:2000]
    body = reply.json()
    assert body["success"], f"{action} as {who} failed:\n{body.get('value')}"
    return [a for a in body["value"] if a["assignment_id"] == ASSIGNMENT]


@pytest.mark.slow
def test_a_class_round_trip_through_jupyterhub(classroom, monkeypatch):
    room = classroom
    room.mark("accounts, exchange, course folder")
    students = ["ann", "ben", "cat"]
    room.add_user("teach", role="instructor")
    for who in [*students, "out"]:
        room.add_user(who)
    subprocess.run([str(CLASSROOM / "make_exchange.sh"), str(room.exchange)], check=True, capture_output=True)
    course_dir = room.home("teach") / "course"  # the instructor's course folder, as in INSTRUCTORS.md
    course_dir.mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", course_dir)
    shutil.copytree(QUIZ, course_dir / "source" / ASSIGNMENT)
    subprocess.run(["chown", "-R", f"{room.name('teach')}:", str(course_dir)], check=True)

    room.mark("hub and proxy start")
    # The hub, with the roster; the outsider has an account but is not on it.
    room.start_hub({"teach": "instructor", **{s: "student" for s in students}})
    groups = {g: sorted(room.api("GET", f"/groups/{g}").json()["users"]) for g in ("formgrade-tlkit", "nbgrader-tlkit")}
    assert groups == {"formgrade-tlkit": [room.name("teach")], "nbgrader-tlkit": sorted(map(room.name, students))}
    assert room.api("POST", "/users", json={"usernames": [room.name("out")]}).status_code == 201

    room.mark("tokens through the REST API")
    # Log in through the REST API: a token per person, and each token is that person.
    server_scopes = _load_hub_config(monkeypatch, room.hub_dir / "roster.txt").Spawner.server_token_scopes
    for who in ["teach", *students, "out"]:
        reply = room.api("POST", f"/users/{room.name(who)}/tokens", json={"note": "tlkit classroom test", "expires_in": 900})
        assert reply.status_code == 201, reply.text
        room.tokens[who] = reply.json()["token"]
        me = room.api("GET", "/user", who=who).json()
        assert me["name"] == room.name(who)
        # Commands typed in a hub terminal use the server's token: the scopes the config gives servers,
        # as far as the user holds them (students do not hold the instructors' group scopes).
        held = [s for s in server_scopes if who == "teach" or not re.search("group=|services", s)]
        reply = room.api("POST", f"/users/{room.name(who)}/tokens", json={"scopes": held, "expires_in": 900})
        assert reply.status_code == 201, reply.text
        room.cli_tokens[who] = reply.json()["token"]
    assert room.api("GET", "/user", who="teach").json()["groups"] == ["formgrade-tlkit"]

    room.mark("servers start")
    # Everyone on the roster starts their own server; the outsider is refused with the reason.
    for who in ["teach", *students]:
        started = room.api("POST", f"/users/{room.name(who)}/server", who=who)
        assert started.status_code in (201, 202), f"{who}: {started.text}\n{room.log_tail()}"
    refused = room.api("POST", f"/users/{room.name('out')}/server", who="out")
    assert refused.status_code == 403 and "not on the course roster" in refused.text
    for who in ["teach", *students]:
        room.wait_for(lambda: room.api("GET", "/user", who=who).json()["servers"][""]["ready"], f"{who}'s server")

    room.mark("servers: accounts and tools")
    # Each server runs as its own account, and shows its role's nbgrader tools.
    for who in ["teach", *students]:
        reply = room.server("PUT", who, "api/contents/whoami.txt", json={"type": "file", "format": "text", "content": who})
        assert reply.status_code in (200, 201), reply.text
        assert (room.home(who) / "whoami.txt").stat().st_uid == pwd.getpwnam(room.name(who)).pw_uid
        disabled = _page_config(room.server("GET", who, "lab").text).get("disabledExtensions", {})
        disabled = {k for k, v in disabled.items() if v} if isinstance(disabled, dict) else set(disabled)
        formgrader = room.server("GET", who, "formgrader/api/status").status_code
        if who == "teach":
            assert not {d for d in disabled if d.startswith("@jupyter/nbgrader")} and formgrader == 200
        else:
            assert STUDENT_ONLY_HIDDEN <= disabled and formgrader == 404
            assert not disabled & {"@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:validate-assignment"}
            assert _assignments(room, who) == []  # the Assignments tab works; nothing released yet

    room.mark("generate and release")
    # Instructor: make the student version and release it (commands typed in the course folder).
    room.run_as("teach", "nbgrader", "generate_assignment", ASSIGNMENT, cwd=course_dir)
    room.run_as("teach", "nbgrader", "release_assignment", ASSIGNMENT, cwd=course_dir)
    listed = room.server("GET", "teach", "formgrader/api/assignments").json()
    assert [a["status"] for a in listed if a["name"] == ASSIGNMENT] == ["released"]

    room.mark("students fetch, work, submit")
    # Students: fetch, work, submit, all through their own servers (what the Assignments tab does).
    source = nbformat.read(QUIZ / f"{ASSIGNMENT}.ipynb", as_version=4)
    for who in students:
        (item,) = _assignments(room, who)
        assert item["status"] == "released"
        (item,) = _assignment_action(room, who, "fetch")
        assert item["status"] == "fetched"
        path = f"{COURSE}/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
        assert (room.home(who) / path).stat().st_uid == pwd.getpwnam(room.name(who)).pw_uid
        fetched = nbformat.from_dict(room.server("GET", who, f"api/contents/{path}").json()["content"])
        work = type_answers(fetched, WORK[who], source) if WORK[who] else fetched
        reply = room.server("PUT", who, f"api/contents/{path}", json={"type": "notebook", "content": work})
        assert reply.status_code == 200, reply.text
        submitted = _assignment_action(room, who, "submit")
        assert any(a["status"] == "submitted" for a in submitted)

    room.mark("inbound privacy")
    # Nobody can list the inbound box: submissions are private until the instructor collects them.
    listing = room.run_as("ben", "ls", str(room.exchange / COURSE / "inbound"), check=False)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr

    room.mark("collect, autograde, feedback")
    # Instructor: collect, autograde, feedback.
    room.run_as("teach", "nbgrader", "collect", ASSIGNMENT, cwd=course_dir)
    assert sorted(p.name for p in (course_dir / "submitted").iterdir()) == sorted(map(room.name, students))
    autograde(room, course_dir)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        for who in students:
            grades = {g.name: g.score for g in gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, room.name(who)).grades}
            assert sum(grades[k] for k in POINTS) == SCORES[who], (who, grades)
    seen = {s["student"]: s["score"] for s in room.server("GET", "teach", f"formgrader/api/submissions/{ASSIGNMENT}").json()}
    assert seen == {room.name(who): SCORES[who] for who in students}  # the Formgrader shows the same
    room.run_as("teach", "nbgrader", "generate_feedback", ASSIGNMENT, cwd=course_dir)
    room.run_as("teach", "nbgrader", "release_feedback", ASSIGNMENT, cwd=course_dir)

    room.mark("students fetch feedback")
    # Each student fetches their own feedback, with their own score.
    feedback = {}
    for who in students:
        _assignment_action(room, who, "fetch_feedback")
        (html,) = (room.home(who) / COURSE / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html")
        feedback[who] = html
        assert _score_line(who) in html.read_text(encoding="utf-8"), f"{who}'s feedback lacks {_score_line(who)!r}"
    # ... and the message of the check that failed (Cat's mean is wrong).
    assert "mean([1, 2, 3]) should be 2, got 3.0" in feedback["cat"].read_text(encoding="utf-8")

    room.mark("feedback privacy")
    # Ben cannot read Ann's feedback, her nbgrader cache (the secret that names it), nor list the
    # exchange's feedback box; asking nbgrader for Ann's feedback gives him only his own.
    for path in (feedback["ann"], room.home("ann") / ".local" / "share" / "jupyter" / "nbgrader_cache"):
        denied = room.run_as("ben", "cat" if path.suffix else "ls", str(path), check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (path, denied.stdout)
    listing = room.run_as("ben", "ls", str(room.exchange / COURSE / "feedback"), check=False)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    room.run_as("ben", "nbgrader", "fetch_feedback", ASSIGNMENT, "--student", room.name("ann"), check=False)
    ben_files = list(room.home("ben").glob(f"{COURSE}/*/feedback/*/*.html"))
    assert ben_files and all(_score_line("ben") in html.read_text(encoding="utf-8") for html in ben_files)
    assert not any(_score_line("ann") in html.read_text(encoding="utf-8") for html in ben_files)

    room.mark("outsider refused")
    # The outsider has an account on the machine but is in no course group: nbgrader refuses.
    refused = room.run_as("out", "nbgrader", "fetch_assignment", ASSIGNMENT, check=False)
    assert refused.returncode != 0 and "You do not have access to this course" in refused.stdout + refused.stderr
    assert not (room.home("out") / COURSE).exists()

    room.mark("late enrolment")
    # A late enrolment: the instructor adds the outsider to the course, which puts them in the hub's
    # nbgrader-tlkit group (through the instructor's scoped token); now nbgrader lets them fetch.
    room.run_as("teach", "nbgrader", "db", "student", "add", room.name("out"), cwd=course_dir)
    assert room.name("out") in room.api("GET", "/groups/nbgrader-tlkit").json()["users"]
    room.run_as("out", "nbgrader", "fetch_assignment", ASSIGNMENT)
    assert (room.home("out") / COURSE / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()
    room.mark("end")
