"""The grading kernel: an ipykernel started inside resource limits, as an unprivileged user, with the
course's secrets out of sight. `llmcourse grade` runs every student notebook in it.

What it does before the kernel starts (the threat model is in README, "How grading works"):
- its own stdout and stderr go to a file the grader reads (the canary quotes it), never into the grader;
- resource limits: address space (memory bombs fail with MemoryError), processes (fork bombs stop at a few
  dozen), file size (an error, not a kill: SIGXFSZ is ignored), no core dumps;
- when the grader runs as root: private mount, network and IPC namespaces. The kernel sees the system's
  folders (/usr, /etc, ...) read-only, and an empty folder in place of every other top-level folder (/work,
  /root, /home, /var, /run, ...) and of the course's sources, solutions, git history, gradebooks and the
  submissions folder: what the grader creates during a batch (the grade cache, feedback, the CSV) never
  appears in it. /tmp, /var/tmp and /dev/shm are private, size-limited tmpfs that vanish with it (the only
  world-writable folders it sees); the Python installation, the virtual environment and the data are bound
  back, read-only; /proc shows only its own processes; its network namespace has no interface that is up, so
  it reaches no address (its channel to nbclient is ZMQ over Unix sockets in its own folder); then a switch
  to a user id of the student's own, which checks and reports what it cannot read;
- the kernel's working directory and HOME are its own scratch folder; `llmcourse` is imported from a copy
  in which the functions students must write are replaced by stubs.

Explained in: README.md, section "Grading".
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import stat
import sys
import tempfile
from pathlib import Path

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_REC, MS_PRIVATE, MS_BIND, MS_RDONLY, MS_NOSUID, MS_NODEV = 0x4000, 0x40000, 0x1000, 0x1, 0x2, 0x4
MS_NOEXEC, MS_REMOUNT = 0x8, 0x20
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
O_PATH = getattr(os, "O_PATH", 0o10000000)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, options: str | None) -> None:
    libc = _libc()
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                  options.encode() if options else None) != 0:
        raise OSError(f"mount {source} on {target}: {os.strerror(ctypes.get_errno())}")


def closed_ancestor(path: str) -> str | None:
    """The outermost folder above `path` that other users cannot enter (a checkout in a `mktemp -d` folder,
    a Python under /root), or None."""
    parts = Path(path).resolve().parts
    for i in range(2, len(parts) + 1):
        folder = str(Path(*parts[:i]))
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return None
    return None


SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # shared, world-writable: each kernel gets private ones
# Top-level folders the kernel sees as they are (read-only where they are folders); every other one (/work,
# /root, /home, /var, /run, /opt, /mnt, ...) is covered by an empty folder in its namespace.
SYSTEM_TOPS = ("usr", "etc", "dev", "proc", "sys", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _outermost(paths) -> list[str]:
    paths = set(paths)
    return sorted(p for p in paths if not any(o != p and _inside(p, o) for o in paths))


def _world_writable(top: str, skip: tuple[str, ...]) -> list[str]:
    """World-writable folders under `top` (a small tree such as /dev), except those in `skip`."""
    found = []
    for folder, dirs, _ in os.walk(top):
        for name in dirs:
            path = os.path.join(folder, name)
            try:
                mode = os.lstat(path).st_mode
                if path not in skip and stat.S_ISDIR(mode) and mode & 0o002:  # not a link (modes 0777)
                    found.append(path)
            except OSError:
                pass
    return found


def _private_proc_options() -> bool:
    """Whether each mount of /proc has options of its own (Linux 5.8 and later)."""
    try:
        return tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (5, 8)
    except ValueError:
        return False


def isolate(hide: list[str], reach: list[str], kernel_dir: str, scratch_bytes: int) -> str:
    """In new private mount, network and IPC namespaces: cover each `hide` path and every top-level folder but
    the system's (SYSTEM_TOPS) with an empty tmpfs; give the kernel private, size-limited /tmp, /var/tmp and
    /dev/shm (and cover any other world-writable folder of /dev); bind back, read-only, every `reach` path (the
    Python installation, the virtual environment, the data) that a cover or a folder closed to other users
    hides, and the kernel's own folder; make the system's folders read-only; mount a /proc that shows the
    kernel's user only its own processes (Linux 5.8 and later). The new network namespace's only interface,
    loopback, stays down: no address can be reached.
    '' on success, else the reason it failed."""
    if _libc().unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) != 0:
        return f"unshare: {os.strerror(ctypes.get_errno())}"
    try:
        _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        for path in hide:
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=4k,mode=0555")
        reach = [str(Path(p).resolve()) for p in reach if os.path.isdir(p)]
        tops = [e.path for e in os.scandir("/") if e.is_dir(follow_symlinks=False) and e.name not in SYSTEM_TOPS]
        system = [e.path for e in os.scandir("/") if e.is_dir(follow_symlinks=False)
                  and e.name in SYSTEM_TOPS and e.name not in ("dev", "proc", "sys")]
        covers = _outermost({c for c in map(closed_ancestor, reach) if c} | set(tops))
        scratch = [d for d in SCRATCH_DIRS if os.path.isdir(d)]
        keep = _outermost(p for p in reach if any(_inside(p, c) for c in covers + scratch))
        keep = [kernel_dir, *(p for p in keep if not _inside(kernel_dir, p))]
        handles = {p: os.open(p, O_PATH) for p in keep}  # they stay reachable through these once covered
        writable = _world_writable("/dev", tuple(scratch))
        for top in system:  # read-only: a world-writable folder there cannot take a note
            _mount(top, top, None, MS_BIND | MS_REC, None)
            _mount("none", top, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
        for cover in covers:
            options = f"size={scratch_bytes},mode=1777" if cover in scratch else "size=1m,mode=0755"
            _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for folder in scratch:
            if folder not in covers:
                os.makedirs(folder, exist_ok=True)  # /var/tmp inside the covered /var
                _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_bytes},mode=1777")
        for folder in writable:  # /dev/mqueue and the like
            _mount("tmpfs", folder, "tmpfs", MS_RDONLY, "size=4k,mode=0555")
        for path, fd in handles.items():
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
            if path != kernel_dir:
                _mount("none", path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
            os.close(fd)
        if _private_proc_options():  # before Linux 5.8 the option would apply to every /proc of the machine
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    except OSError as err:
        return str(err)
    return ""


def own_scratch(folder: Path, uid: int | None, scratch_bytes: int) -> None:
    """The kernel's home and working folder: in the namespace, a tmpfs of `scratch_bytes` owned by its user
    (a disk quota that vanishes with the kernel); without root, a plain folder."""
    folder.mkdir(exist_ok=True)
    if uid is not None:
        _mount("tmpfs", str(folder), "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={scratch_bytes},mode=0700,uid={uid},gid={uid}")
    for sub in ("cwd", "ipython", "matplotlib", "cache"):
        (folder / sub).mkdir(exist_ok=True)
        if uid is not None:
            os.chown(folder / sub, uid, uid)


def unreachable(paths: list[str]) -> list[str]:
    """After the switch to the kernel's user: the paths it cannot read (each given path, and the packages in
    a site-packages folder among them), with the reason, for the grader's canary message."""
    problems = []
    for path in paths:
        entries = [path]
        if path.endswith("-packages") and os.access(path, os.R_OK | os.X_OK):
            entries += sorted(e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
        for entry in entries:  # each exists (the grader saw it): one this user cannot even see is closed off
            if not os.access(entry, os.R_OK | os.X_OK):
                closed = _closed_from(entry)
                why = (f"{closed} is closed to other users" if closed and closed != entry
                       else "its permissions close it to other users")
                problems.append(f"the grading user (uid {os.getuid()}) cannot read {entry}: {why}")
    return problems[:10]


def _closed_from(path: str) -> str | None:
    """The first folder on the way to `path` that this user cannot enter."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        folder = str(Path(*parts[:i]))
        if not os.access(folder, os.X_OK):
            return folder
    return None


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
    """A thread of the kernel: when the kernel's process group holds more than MAX_GROUP_PROCESSES processes,
    kill every one but the kernel, and keep doing so until none is left (the kernel itself may still be forking
    until its cell is interrupted), so a fork bomb cannot starve the machine until the notebook's time limit.
    The kernel adopts its orphaned descendants (a child subreaper) and the thread reaps those it killed: their
    zombies would otherwise hold the process limit (threads count against it too), and the kernel, once
    interrupted, could not start a thread to answer. Only processes it killed are reaped: a subprocess the
    student waits for keeps its exit status."""
    import signal
    import threading
    import time

    me, group = os.getpid(), os.getpgrp()
    killed: set[int] = set()
    _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def members() -> list[int]:
        pids = []
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and int(pid) != me and os.getpgid(int(pid)) == group:
                    pids.append(int(pid))
            except OSError:
                pass
        return pids

    def reap() -> None:
        for pid in list(killed):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0]
            except ChildProcessError:  # a grandchild whose parent is still dying, or reaped already
                done = not os.path.exists(f"/proc/{pid}")
            if done:
                killed.discard(pid)

    def loop() -> None:
        sweeping = False
        while True:
            others = members()
            sweeping = len(others) >= MAX_GROUP_PROCESSES or (sweeping and bool(others))
            if sweeping:
                for pid in others:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.add(pid)
                    except OSError:
                        pass
            reap()
            time.sleep(0.05 if killed else 0.2)

    threading.Thread(target=loop, daemon=True, name="llmcourse-fork-watch").start()


OWNER = ".owner"  # in a grading scratch folder: "PID START_TIME" of the process that made it
SCRATCH_PREFIXES = ("llmcourse-kernel-", "llmcourse-grade-")  # the grader's scratch folders in the temp folder


def _start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22), None if it is gone: with
    the pid, names a process even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def scratch_folder(prefix: str) -> Path:
    """A new folder in the temp folder for the grader (`prefix`: one of SCRATCH_PREFIXES), marked with this
    process, so that a later run can tell it was left behind by a process that died (`sweep_stale`)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    (folder / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}")
    return folder


def sweep_stale(parent: str | None = None) -> list[str]:
    """Remove the grader's scratch folders (kernel folders, batch work folders) in the temp folder whose owning
    process is dead: what a killed worker or batch left. A folder of a live process (another run on this machine),
    or one without its owner mark (being created, or not made by `scratch_folder`), is left alone. Called when a
    local batch or a Dask worker prepares an assignment. Returns the folders removed."""
    removed = []
    try:
        entries = list(os.scandir(parent or tempfile.gettempdir()))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.name.startswith(SCRATCH_PREFIXES) or not entry.is_dir(follow_symlinks=False):
                continue
            pid, started = Path(entry.path, OWNER).read_text().split()
            alive = _start_time(int(pid)) == started
        except (OSError, ValueError):
            continue
        if not alive:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def main() -> None:
    """argv: SETTINGS_JSON CONNECTION_FILE. Sets everything up, then becomes the ipykernel."""
    settings = json.loads(Path(sys.argv[1]).read_text())
    connection = Path(sys.argv[2]).read_text()  # readable only before the user switch
    kernel_dir = Path(settings["kernel_dir"])
    os.umask(0o022)
    # The kernel's own stdout and stderr (tracebacks of a start that fails, a crash's last words) go to a file
    # the grader reads, never into the grader's pipes; a file-size limit then raises an error, it does not kill.
    out = os.open(kernel_dir / "kernel-output.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    notes = []
    isolated = False
    uid = settings.get("uid")
    if os.geteuid() == 0:
        problem = isolate(settings["hide"], settings["reach"], str(kernel_dir), settings["scratch_bytes"])
        isolated = not problem
        if problem:
            notes.append(f"sandbox incomplete: {problem}")
    switch = os.geteuid() == 0 and uid and isolated
    home = kernel_dir / "home"
    own_scratch(home, uid if switch else None, settings["scratch_bytes"])
    own_connection = kernel_dir / "connection.json"
    own_connection.write_text(connection)
    if notes:
        (kernel_dir / "sandbox-notes.txt").write_text("\n".join(notes))
    if switch:
        os.chown(own_connection, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        # A process that changed its user is not "dumpable", nor are its children: /proc, mounted with hidepid=2,
        # would hide the kernel's own children from it, and watch_forks could not see a fork bomb.
        _libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        processes = settings["max_processes"]
    else:  # not root: the process limit counts all of this user's processes, so allow for those already running
        processes = count_processes_of(os.getuid()) + settings["max_processes"]
    for problem in unreachable(settings["reach"]):
        print(f"llmcourse sandbox: {problem}", file=sys.stderr, flush=True)
    limit_resources(settings["memory_bytes"], processes, settings["max_file_bytes"])
    os.chdir(home / "cwd")
    os.environ.clear()
    os.environ.update(settings["env"])
    os.environ.update({"HOME": str(home / "cwd"), "IPYTHONDIR": str(home / "ipython"), "TMPDIR": "/tmp",
                       "MPLCONFIGDIR": str(home / "matplotlib"), "LLMCOURSE_CACHE": str(home / "cache"),
                       "PYTHONPATH": settings["pythonpath"]})
    sys.path.insert(0, settings["pythonpath"])
    watch_forks()
    sys.argv = [sys.argv[0], "-f", str(own_connection), "--HistoryManager.hist_file=:memory:"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
