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
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from traitlets.config.loader import PyFileConfigLoader

from nbgrader_helpers import type_answers

ROOT = Path(__file__).resolve().parents[1]
CLASSROOM = ROOT / "classroom"
HUB_CONFIG = CLASSROOM / "jupyterhub_config.py"
QUIZ = Path(__file__).resolve().parent / "notebooks" / "classroom_quiz"
ASSIGNMENT = QUIZ.name
COURSE = "tlkit"
VENV_BIN = Path(sys.executable).parent
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
# The round trip: real accounts, a real hub
# ----------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_requirement() -> str | None:
    """Why the round trip cannot run here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the classroom round trip creates local Linux users: run it as root (CI does)"
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool) is None:
            return f"the classroom round trip needs `{tool}` (package passwd / util-linux)"
    if shutil.which("configurable-http-proxy") is None:
        return "configurable-http-proxy is not installed: `make hub-deps` (npm install -g configurable-http-proxy)"
    if not (VENV_BIN / "jupyterhub").exists() or not (VENV_BIN / "jupyterhub-singleuser").exists():
        return f"JupyterHub is not installed in {VENV_BIN.parent}: `make hub-deps` (pip install '.[hub]')"
    if _closed_folders() and shutil.which("setfacl") is None:
        return (f"{', '.join(map(str, _closed_folders()))} cannot be entered by other users, so the class's "
                f"accounts cannot run {sys.executable}; install `setfacl` (`make hub-deps`: Debian package acl) "
                "so the test can let its own accounts through for its duration")
    return None


def _closed_folders() -> list[Path]:
    """Folders above the interpreter, the venv and this checkout that other users cannot enter
    (e.g. /root when Python comes from pyenv under /root)."""
    needed = {Path(os.path.realpath(sys.executable)), Path(sys.base_prefix), Path(sys.prefix), ROOT}
    closed = {folder for path in needed for folder in path.parents if folder.stat().st_mode & 0o001 == 0}
    return sorted(closed)


class Classroom:
    """Local accounts, an exchange, an instructor's course folder, a proxy and a hub; all removed by
    :meth:`close`. Account names are ``<prefix>-<role or name>`` with a random prefix."""

    def __init__(self):
        self.prefix = f"tlkit-t-{secrets.token_hex(3)}"
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.base.chmod(0o755)
        self.users: list[str] = []
        self.marks: list[tuple[str, float]] = []  # (phase, start time): printed by close()
        self.saved_acls: dict[Path, str] = {}  # each folder's ACL before the test touched it
        self.procs: list[subprocess.Popen] = []
        self.tokens: dict[str, str] = {}      # each person's login token (all their rights)
        self.cli_tokens: dict[str, str] = {}  # what their server's terminal gets: the config's server_token_scopes
        self.exchange = self.base / "exchange"
        self.hub_dir = self.base / "hub"
        self.hub_dir.mkdir(mode=0o700)
        self.proxy_port, self.hub_port, self.api_port = _free_port(), _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.proxy_port}"
        self.admin_token = secrets.token_hex(32)
        import requests

        self.http = requests.Session()
        self.http.trust_env = False  # loopback only: never through a proxy from the environment

    # accounts
    def name(self, who: str) -> str:
        return f"{self.prefix}-{who}"

    def home(self, who: str) -> Path:
        return self.base / "home" / self.name(who)

    def add_user(self, who: str) -> None:
        name = self.name(who)
        self.users.append(name)  # before useradd: a half-made account is removed too
        (self.base / "home").mkdir(mode=0o755, exist_ok=True)
        subprocess.run(["useradd", "--create-home", "--home-dir", str(self.home(who)), "--shell", "/bin/bash",
                        "-K", "HOME_MODE=0700", "--comment", "tlkit classroom test", name],
                       check=True, capture_output=True, timeout=60)
        for folder in _closed_folders():  # let this account (only) through; undone in close()
            if folder not in self.saved_acls:
                self.saved_acls[folder] = subprocess.run(["getfacl", "--absolute-names", str(folder)], check=True,
                                                         capture_output=True, text=True, timeout=30).stdout
            subprocess.run(["setfacl", "-m", f"u:{name}:x", str(folder)], check=True, capture_output=True, timeout=30)

    def run_as(self, who: str, *cmd: str, cwd: Path | None = None, check: bool = True, timeout: float = 300):
        """Run ``cmd`` as account ``who`` (runuser), with a clean environment like a hub terminal's."""
        name = self.name(who)
        env = {"HOME": str(self.home(who)), "USER": name, "LOGNAME": name, "LANG": "C.UTF-8",
               "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "OMP_NUM_THREADS": "1",
               "NBGRADER_EXCHANGE": str(self.exchange), "TLKIT_COURSE": COURSE,
               "JUPYTER_CONFIG_PATH": os.pathsep.join(str(CLASSROOM / "jupyter" / d) for d in
                                                      (("instructor" if who == "teach" else "student"), "common")),
               "JUPYTERHUB_API_URL": f"http://127.0.0.1:{self.hub_port}/hub/api", "JUPYTERHUB_USER": name,
               "JUPYTERHUB_API_TOKEN": self.cli_tokens.get(who, "")}
        proc = subprocess.run(["runuser", "-u", name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd],
                              cwd=cwd or self.home(who), capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        if check and (proc.returncode != 0 or "[ERROR]" in output or "| ERROR]" in output):
            raise AssertionError(f"`{' '.join(cmd)}` as {who} failed (exit {proc.returncode}):\n{output[-6000:]}")
        return proc

    # hub
    def start_hub(self, roster: dict[str, str]) -> None:
        (self.hub_dir / "roster.txt").write_text("".join(f"{role} {self.name(who)}\n" for who, role in roster.items()))
        proxy_token = secrets.token_hex(32)
        (self.hub_dir / "test_config.py").write_text(f"""
c = get_config()
load_subconfig({str(HUB_CONFIG)!r})
c.JupyterHub.bind_url = "{self.url}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
c.JupyterHub.proxy_class = "configurable-http-proxy"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.services = [{{"name": "tlkit-test-admin", "api_token": {self.admin_token!r}}}]
c.JupyterHub.load_roles = c.JupyterHub.load_roles + [{{
    "name": "tlkit-test-admin", "services": ["tlkit-test-admin"],
    "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens", "list:users", "read:users"]}}]
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.JupyterHub.log_level = "INFO"
""")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", TLKIT_ROSTER=str(self.hub_dir / "roster.txt"),
                   TLKIT_HUB_STATE=str(self.hub_dir), NBGRADER_EXCHANGE=str(self.exchange),
                   CONFIGPROXY_AUTH_TOKEN=proxy_token)
        env.pop("TLKIT_COURSE", None)
        self.proxy_log = open(self.hub_dir / "proxy.log", "w")
        self.procs.append(subprocess.Popen(
            [shutil.which("configurable-http-proxy"), "--ip", "127.0.0.1", "--port", str(self.proxy_port),
             "--api-ip", "127.0.0.1", "--api-port", str(self.api_port),
             "--default-target", f"http://127.0.0.1:{self.hub_port}",
             "--error-target", f"http://127.0.0.1:{self.hub_port}/hub/error"],
            env=env, cwd=self.hub_dir, stdout=self.proxy_log, stderr=subprocess.STDOUT, start_new_session=True))
        self.hub_log = open(self.hub_dir / "hub.log", "w")
        self.procs.append(subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(self.hub_dir / "test_config.py")],
                                           env=env, cwd=self.hub_dir, stdout=self.hub_log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        self.wait_for(lambda: self.http.get(f"{self.url}/hub/api/", timeout=5).status_code == 200, "the hub to start")

    def log_tail(self) -> str:
        text = (self.hub_dir / "hub.log").read_text(errors="replace") if (self.hub_dir / "hub.log").exists() else ""
        return text[-5000:]

    def wait_for(self, ready, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"the hub or the proxy exited while waiting for {what}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:  # not up yet: connection refused, half-started server
                pass
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log_tail()}")

    def api(self, method: str, path: str, who: str | None = None, **kwargs):
        """A hub REST API call, as the admin service (``who=None``) or as a user with their token."""
        token = self.admin_token if who is None else self.tokens[who]
        return self.http.request(method, f"{self.url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                                 timeout=60, **kwargs)

    def server(self, method: str, who: str, path: str, **kwargs):
        """A request to ``who``'s own single-user server, through the proxy, with their token."""
        return self.http.request(method, f"{self.url}/user/{self.name(who)}/{path.lstrip('/')}",
                                 headers={"Authorization": f"token {self.tokens[who]}"}, timeout=120, **kwargs)

    def mark(self, phase: str) -> None:
        """Note when a phase of the test starts (the times are printed, never asserted)."""
        self.marks.append((phase, time.monotonic()))

    # teardown
    def _kill_users_processes(self) -> None:
        uids = set()
        for name in self.users:
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid in uids:
                        os.kill(int(entry.name), signal.SIGKILL)
                except (FileNotFoundError, ProcessLookupError, PermissionError):
                    pass

    def close(self) -> None:
        for (phase, start), (_, end) in zip(self.marks, self.marks[1:]):
            print(f"{end - start:7.1f} s  {phase}")
        for proc in reversed(self.procs):  # the hub first (it stops the servers it spawned), then the proxy
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        for log in ("hub_log", "proxy_log"):
            if hasattr(self, log):
                getattr(self, log).close()
        self._kill_users_processes()
        for folder, saved in self.saved_acls.items():  # put each folder's ACL back exactly as it was
            subprocess.run(["setfacl", "--restore=-"], input=saved, capture_output=True, text=True, timeout=30)
        for name in self.users:
            for _ in range(3):
                done = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True, timeout=60)
                if done.returncode in (0, 6) or "does not exist" in done.stderr:
                    break
                self._kill_users_processes()
                time.sleep(1)
        self.http.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def classroom():
    reason = _missing_requirement()
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


# ---- the step the lead swaps at merge --------------------------------------------------------
def autograde(room: Classroom, course_dir: Path) -> None:
    """Autograde every collected submission of the quiz, as the instructor, in the course folder.

    SWAP POINT: when `tlkit autograde` (parallel, sandboxed; tlkit/classroom/) is merged, replace
    the command below with ``room.run_as("teach", "tlkit", "autograde", ASSIGNMENT, "--workers", "2",
    cwd=course_dir)``; every assertion after this call must still hold unchanged.
    """
    room.run_as("teach", "nbgrader", "autograde", ASSIGNMENT, cwd=course_dir)
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
    for who in ["teach", *students, "out"]:
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
