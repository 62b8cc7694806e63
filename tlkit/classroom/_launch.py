"""Start a Jupyter kernel inside the grading sandbox (run by jupyter_client, not imported).

This file is the first word of the ``tlkit-sandbox`` kernel spec that ``tlkit autograde`` writes
for each submission. It runs as the grader (root or not), sets the box up, and then *becomes* the
kernel with ``execve`` (same process id, so nbgrader's interrupts and kills reach the kernel):

1. as root, hands the submission's private copy (the "box") to the sandbox user;
2. copies the connection file into the box (the kernel talks over Unix sockets there, which work
   across network namespaces);
3. ``unshare``: a new network namespace (no interface but a loopback that is down: nothing
   reachable, not even 127.0.0.1 outside), a new mount namespace in which the course's solutions,
   submissions and gradebook are covered by empty, unreadable file systems and the shared caches
   are read-only; without root, a user namespace first;
4. limits: private writable memory (RLIMIT_DATA), CPU seconds, file size, no core files;
5. drops to the sandbox user (root only), arranges to die with its parent, and ``execve``s the
   kernel with the environment the grader chose (private HOME and TMPDIR).

It imports nothing from tlkit so that a kernel start costs no torch import.
Usage: ``python _launch.py SETTINGS.json -- python -m ipykernel_launcher -f {connection_file}``
"""
import ctypes
import json
import os
import resource
import shutil
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    sys.stderr.write(f"tlkit sandbox: {what} failed: {os.strerror(err)}\n")
    sys.exit(70)


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        _fail(f"mount {target}")


def _chown_tree(path: str, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def main(argv: list) -> None:
    settings_path, sep, *kernel = argv
    assert sep == "--" and kernel, "usage: _launch.py SETTINGS.json -- KERNEL ARGV..."
    with open(settings_path) as f:
        s = json.load(f)
    root = os.geteuid() == 0
    uid, gid = s.get("uid"), s.get("gid")
    drop = root and uid is not None

    # The connection file: a copy inside the box that the sandbox user can read.
    if "-f" in kernel:
        i = kernel.index("-f") + 1
        private = os.path.join(s["run"], os.path.basename(kernel[i]))
        shutil.copyfile(kernel[i], private)
        kernel[i] = private
    if drop:
        _chown_tree(s["box"], uid, gid)
    os.chmod(s["box"], 0o700)

    flags = 0
    if s.get("network"):
        flags |= CLONE_NEWNET
    if s.get("hide") or s.get("readonly") or s.get("reach"):
        flags |= CLONE_NEWNS
    if flags and not root:
        flags |= CLONE_NEWUSER
    if flags:
        real_uid, real_gid = os.getuid(), os.getgid()
        if _libc.unshare(flags) != 0:
            _fail("unshare")
        if flags & CLONE_NEWUSER:  # map ourselves to ourselves inside the new user namespace
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{real_uid} {real_uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{real_gid} {real_gid} 1")
    if flags & CLONE_NEWNS:
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        # Paths the kernel needs (Python, tlkit, its box) under folders other users cannot
        # enter (/root with a pyenv Python): cover such a folder with an empty tmpfs and bind
        # back only what is needed, read-only except the box.
        held = [(os.open(path, os.O_PATH), path, writable) for path, writable in s.get("reach", [])]
        for cover in s.get("covers", []):
            _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        for fd, path, writable in held:
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            if not writable:
                _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
            os.close(fd)
        for path in s.get("hide", []):
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000")
            elif os.path.exists(path):
                _mount("/dev/null", path, None, MS_BIND)
        for path in s.get("readonly", []):
            if os.path.isdir(path):
                _mount(path, path, None, MS_BIND | MS_REC)
                _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)

    def limit(kind, soft, hard=None):
        resource.setrlimit(kind, (soft, soft if hard is None else hard))

    if s.get("memory_bytes"):
        # RLIMIT_DATA (private writable memory), not RLIMIT_AS: importing torch alone reserves
        # more address space than a 4 GB limit allows, while using far less memory.
        limit(resource.RLIMIT_DATA, int(s["memory_bytes"]))
    if s.get("cpu_seconds"):
        limit(resource.RLIMIT_CPU, int(s["cpu_seconds"]), int(s["cpu_seconds"]) + 5)
    if s.get("file_bytes"):
        limit(resource.RLIMIT_FSIZE, int(s["file_bytes"]))
    limit(resource.RLIMIT_CORE, 0)

    if drop:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the grader
    os.umask(0o077)
    os.chdir(s.get("cwd") or os.getcwd())
    os.execve(kernel[0], kernel, s["env"])


if __name__ == "__main__":
    main(sys.argv[1:])
