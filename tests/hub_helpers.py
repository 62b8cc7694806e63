"""A throwaway class on this machine for tests/test_classroom_hub.py: local accounts, an exchange,
configurable-http-proxy and JupyterHub (classroom/jupyterhub_config.py) on 127.0.0.1.

:class:`Classroom` makes them and :meth:`Classroom.close` removes every one of them (accounts, homes,
processes, the ACL entries it added), also after a failure; :func:`missing_requirement` says why a
round trip cannot run here (not root, a tool missing).
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSROOM = ROOT / "classroom"
HUB_CONFIG = CLASSROOM / "jupyterhub_config.py"
COURSE = "tlkit"
VENV_BIN = Path(sys.executable).parent

__all__ = ["Classroom", "missing_requirement", "CLASSROOM", "HUB_CONFIG", "COURSE", "ROOT"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_requirement() -> str | None:
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
        self.roles: dict[str, str] = {}
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

    def add_user(self, who: str, role: str = "student") -> None:
        """Make the local account ``<prefix>-<who>`` (private home); ``role`` picks the Jupyter config
        its commands read (``classroom/jupyter/<role>``), as the hub's pre_spawn_hook does for servers."""
        name = self.name(who)
        self.roles[who] = role
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
                                                      (self.roles[who], "common")),
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
