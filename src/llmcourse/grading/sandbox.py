"""The grading kernel: an ipykernel started inside resource limits, as an unprivileged user, with the
course's secrets out of sight. `llmcourse grade` runs every student notebook in it.

What it does before the kernel starts (the threat model is in README, "Grading"):
- resource limits: address space (memory bombs fail with MemoryError), processes (fork bombs stop at a few
  dozen), file size, no core dumps;
- when the grader runs as root: a private mount namespace in which the course's sources, solutions, git
  history, gradebooks and the submissions folder are covered by empty folders, then a switch to a user id of
  the student's own (so other students' kernel folders are unreadable and the process limit counts only this
  kernel's processes);
- the kernel's working directory and HOME are the student's own kernel folder; `llmcourse` is imported from
  a copy in which the functions students must write are replaced by stubs.

Explained in: README.md, section "Grading".
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE, MS_BIND, MS_RDONLY = 0x4000, 0x40000, 0x1000, 0x1


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, options: str | None) -> None:
    libc = _libc()
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                  options.encode() if options else None) != 0:
        raise OSError(f"mount {source} on {target}: {os.strerror(ctypes.get_errno())}")


def _closed_ancestor(path: str) -> str | None:
    """The outermost folder above `path` that other users cannot enter (e.g. /root for a pyenv Python)."""
    parts = Path(path).resolve().parts
    for i in range(2, len(parts)):
        folder = str(Path(*parts[:i]))
        if not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def hide_paths(paths: list[str], scratch: Path) -> str:
    """In a new private mount namespace, cover each path with an empty read-only tmpfs, and make the Python
    installation reachable for an unprivileged user. '' on success, else the reason it failed."""
    if _libc().unshare(CLONE_NEWNS) != 0:
        return f"unshare: {os.strerror(ctypes.get_errno())}"
    try:
        _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        for path in paths:
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=4k,mode=0555")
        python = str(Path(sys.base_prefix).resolve())
        closed = _closed_ancestor(python)
        if closed:  # keep only the Python installation visible inside the closed folder
            side = scratch / "python"
            side.mkdir()
            _mount(python, str(side), None, MS_BIND | MS_REC, None)
            _mount("tmpfs", closed, "tmpfs", 0, "size=64k,mode=0755")
            os.makedirs(python)
            _mount(str(side), python, None, MS_BIND | MS_REC, None)
    except OSError as err:
        return str(err)
    return ""


def limit_resources(memory_bytes: int, max_processes: int, max_file_bytes: int) -> None:
    """Kernel-enforced limits inherited by everything the kernel starts."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))


def count_processes_of(uid: int) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                n += 1
        except OSError:
            pass
    return n


MAX_GROUP_PROCESSES = 8  # more processes than this in the kernel's process group: a fork bomb, cut down


def watch_forks() -> None:
    """A thread of the kernel: while the kernel's process group holds more than MAX_GROUP_PROCESSES processes,
    kill every one but the kernel, so a fork bomb cannot starve the machine until the notebook's time limit."""
    import signal
    import threading
    import time

    me, group = os.getpid(), os.getpgrp()

    def members() -> list[int]:
        pids = []
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and int(pid) != me and os.getpgid(int(pid)) == group:
                    pids.append(int(pid))
            except OSError:
                pass
        return pids

    def loop() -> None:
        while True:
            others = members()
            if len(others) >= MAX_GROUP_PROCESSES:
                for pid in others:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True, name="llmcourse-fork-watch").start()


def main() -> None:
    """argv: SETTINGS_JSON CONNECTION_FILE. Sets everything up, then becomes the ipykernel."""
    settings = json.loads(Path(sys.argv[1]).read_text())
    connection = Path(sys.argv[2]).read_text()  # readable only before the user switch
    home = Path(settings["kernel_dir"])
    notes = []
    hidden = False
    if os.geteuid() == 0:
        problem = hide_paths(settings["hide"], home)
        hidden = not problem
        if problem:
            notes.append(f"sandbox incomplete: {problem}")
    own_connection = home / "connection.json"
    own_connection.write_text(connection)
    uid = settings.get("uid")
    if os.geteuid() == 0 and uid and hidden:
        os.chown(own_connection, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        processes = settings["max_processes"]
    else:  # not root: the process limit counts all of this user's processes, so allow for those already running
        processes = count_processes_of(os.getuid()) + settings["max_processes"]
    limit_resources(settings["memory_bytes"], processes, settings["max_file_bytes"])
    os.chdir(home / "cwd")
    os.environ.clear()
    os.environ.update(settings["env"])
    os.environ.update({"HOME": str(home / "cwd"), "IPYTHONDIR": str(home / "ipython"),
                       "MPLCONFIGDIR": str(home / "matplotlib"), "PYTHONPATH": settings["pythonpath"]})
    sys.path.insert(0, settings["pythonpath"])
    if notes:
        (home / "sandbox-notes.txt").write_text("\n".join(notes))
    watch_forks()
    sys.argv = [sys.argv[0], "-f", str(own_connection), "--HistoryManager.hist_file=:memory:"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
