"""The grading kernel reaches nothing but its own notebook (issue 27, items 1, 2, 5-8; issue 28, item 5).

One batch of 01_tokens, graded as root, in a folder outside /tmp (where the instructor keeps a course: the grade
cache and the feedback beside the CSV, earlier runs' outputs, other assignments' caches and submissions). Its
students attack the grader from inside their kernels and print what they found; their feedback pages and rows
say whether any attack worked. Every attack printed here worked on the grader before these guarantees.
"""
from __future__ import annotations

import hashlib
import html
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from llmcourse import grading
from llmcourse.grading.kernel import sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the kernel's namespaces need root")

ASSIGNMENT = "01_tokens"
LIMITS = grading.Limits(cell_timeout=170, student_timeout=600)
TOKEN = secrets.token_hex(6)
SECRET = f"ISO-SECRET-{TOKEN}"  # written into every file of the instructor's that no kernel may read


def _solution():
    return nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


# Waits for the canary's grade cache entry (the instructor's solution, graded first), then runs the solution's
# cosine_similarity from the feedback page kept in it: 2/2 from a stub, if the cache can be read.
CACHE_THIEF = '''
import hashlib, html, json, os, pathlib, re, time
cache = pathlib.Path({cache!r})
entry = cache / (hashlib.sha256(b".canary").hexdigest()[:16] + ".json")
print(f"ISO looked-at {{time.time()}}")  # graded after the canary (see `batch`): its entry is on the disk now
try:
    print(f"ISO cache-entries {{len(os.listdir(cache))}}")
except OSError as err:
    print(f"ISO cache-unreadable {{type(err).__name__}}")
try:
    page = html.unescape(re.sub(r"<[^>]+>", "", json.loads(entry.read_text())["html"]))
    exec(re.search(r"^def cosine_similarity\\(.*?(?=^\\S)", page, re.S | re.M).group(0))
    print("ISO STOLEN")
except Exception as err:
    print(f"ISO steal-failed {{type(err).__name__}}")
    def cosine_similarity(a, b):
        raise NotImplementedError
'''

# Looks around from the first answer cell, before any test ran: the cases, the instructor's files, the network,
# every world-writable folder and Unix socket it can see, /proc.
PROBE = '''
import os, socket, stat, time
me = os.environ["LLMCOURSE_GRADING"]
print(f"ISO cases-before {{len(os.listdir(me + '/cases'))}}")
for path in {secrets!r}:
    try:
        with open(path, errors="replace") as f:
            print(f"ISO read-ok {{path}} {{f.read(200).count('ISO-SECRET')}}")
    except OSError:
        pass
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
    print("ISO tcp-ok")
except OSError as err:
    print(f"ISO tcp-blocked {{err.errno}}")
def unix(address):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    try:
        s.connect(address)
        return True
    except OSError:
        return False
    finally:
        s.close()
for address in ["\\0llmcourse-iso-{token}", {unix_path!r}]:
    if unix(address):
        print(f"ISO unix-ok {{address!r}}")
writable, sockets, start, todo = [], [], time.time(), ["/"]
while todo:  # the whole view but /proc and /sys; d_type spares a stat of each file
    if time.time() - start > 130:
        print(f"ISO walk-incomplete {{todo[-1]}}")
        break
    try:
        entries = list(os.scandir(todo.pop()))
    except OSError:
        continue
    for entry in entries:
        if entry.path in ("/proc", "/sys") or entry.is_symlink():
            continue
        if entry.is_dir():
            todo.append(entry.path)
            try:
                if entry.stat(follow_symlinks=False).st_mode & 0o002:
                    with open(os.path.join(entry.path, "iso-note-{token}"), "w") as f:
                        f.write("a note for the next kernel")
                    writable.append(entry.path)
            except OSError:
                pass
        elif not entry.is_file() and not entry.path.startswith(me + "/"):
            try:
                if stat.S_ISSOCK(os.lstat(entry.path).st_mode):
                    sockets.append(entry.path)
            except OSError:
                pass
print("ISO writable " + " ".join(sorted(writable)))
for path in sockets:
    if unix(path):
        print(f"ISO unix-ok {{path}}")
others = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if os.stat("/proc/" + pid).st_uid != os.getuid():
                others.append(pid)
        except OSError:
            pass
print(f"ISO proc-others {{len(others)}}")
'''

CASES_AFTER = '''
import os
print(f"ISO cases-after {len(os.listdir(os.environ['LLMCOURSE_GRADING'] + '/cases'))}")
'''


class Listener:
    """A TCP port on 127.0.0.1 and two Unix sockets (abstract, and a path the kernel could otherwise see) that
    count who connects."""

    def __init__(self, unix_path: Path):
        self.connections = 0
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind(f"\0llmcourse-iso-{TOKEN}")
        self.path = socket.socket(socket.AF_UNIX)
        self.path.bind(str(unix_path))
        os.chmod(unix_path, 0o777)
        self.servers = [self.tcp, self.abstract, self.path]
        for server in self.servers:
            server.listen()
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server):
        while True:
            try:
                server.accept()[0].close()
            except OSError:
                return
            self.connections += 1

    def close(self):
        for server in self.servers:
            server.close()


def _owned_folder(name: str, pid: int) -> Path:
    folder = Path(tempfile.gettempdir(), name)
    folder.mkdir()
    (folder / sandbox.OWNER).write_text(f"{pid} {sandbox._start_time(pid)}")
    return folder


@pytest.fixture(scope="module")
def batch():
    (REPO / ".cache").mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(dir=REPO / ".cache", prefix="isolation-"))
    os.chmod(base, 0o755)  # an instructor's folder, open to other users as a checkout usually is
    # What an earlier run and other assignments left beside this one.
    planted = {"earlier_csv": base / "grades-earlier.csv", "earlier_page": base / "feedback" / "earlier.html",
               "other_cache": base / ".llmcourse-grade-cache" / "05_gpt" / "0123456789abcdef.json",
               "other_submission": base / "submissions-05_gpt" / "ann" / "work.ipynb"}
    for path in planted.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{SECRET} {path.name}")
    for folder in {p.parent for p in planted.values()} | {base / "submissions-05_gpt"}:
        os.chmod(folder, 0o755)
    cache = base / ".llmcourse-grade-cache" / ASSIGNMENT  # created by the run: its first run
    subs = base / "submissions"
    notebooks = {"honest": _solution()}
    probe = _solution()
    unix_path = base / "listen.sock"
    listener = Listener(unix_path)
    _cell(probe, "count_pairs").source = PROBE.format(
        secrets=[str(p) for p in planted.values()], port=listener.port, token=TOKEN, unix_path=str(unix_path)
    ) + _cell(probe, "count_pairs").source
    _cell(probe, "cosine_similarity").source = CASES_AFTER + _cell(probe, "cosine_similarity").source
    notebooks["probe"] = probe
    thief = nbformat.read(REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    _cell(thief, "cosine_similarity").source = CACHE_THIEF.format(cache=str(cache))
    notebooks["zz_cache_thief"] = thief  # last: the canary's entry is written long before it starts
    for student, nb in notebooks.items():
        (subs / student).mkdir(parents=True)
        nbformat.write(nb, subs / student / "work.ipynb")
    # Scratch folders in /tmp: one a dead process left, one of a live run, one without an owner's mark.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    stale = _owned_folder(f"llmcourse-kernel-isotest-{TOKEN}-dead", dead.pid)  # its start time, while it runs
    dead.wait()
    live = _owned_folder(f"llmcourse-grade-isotest-{TOKEN}-live", os.getpid())
    unmarked = Path(tempfile.gettempdir(), f"llmcourse-kernel-isotest-{TOKEN}-unmarked")
    unmarked.mkdir()
    try:
        rows = grading.grade(subs, ASSIGNMENT, out=base / "grades.csv", feedback=base / "feedback", jobs=2,
                             limits=LIMITS, progress=False)
        yield {"rows": {r.student: r for r in rows}, "base": base, "listener": listener,
               "folders": {"stale": stale, "live": live, "unmarked": unmarked}}
    finally:
        listener.close()
        for folder in [base, stale, live, unmarked]:
            shutil.rmtree(folder, ignore_errors=True)


def found(batch, student: str) -> list[str]:
    """The ISO lines a student's kernel printed (one print each, a single string: the pieces of a print may
    arrive as separate outputs), from its feedback page."""
    page = (batch["base"] / "feedback" / f"{student}.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    return [line.strip() for line in text.splitlines() if line.strip().startswith("ISO ")]


def test_honest_students_keep_full_marks_over_the_kernels_own_channel(batch):
    for student in ["honest", "probe"]:
        row = batch["rows"][student]
        assert row.status == "graded" and row.score == row.max_score, (student, row.status, row.message)


def test_the_canarys_cache_entry_is_invisible_on_a_first_run(batch):
    """Item 1: the cache folder is created during the batch; no kernel sees it, nor what is in it."""
    row, lines = batch["rows"]["zz_cache_thief"], found(batch, "zz_cache_thief")
    assert "ISO STOLEN" not in lines, lines
    assert row.cells["test_cosine_similarity"][0] == 0 and row.score == 0, row.cells
    assert not any(line.startswith("ISO cache-entries") for line in lines), lines
    sha = hashlib.sha256(b".canary").hexdigest()[:16]
    entry = batch["base"] / ".llmcourse-grade-cache" / ASSIGNMENT / f"{sha}.json"
    assert entry.exists(), "the canary was cached"
    looked = float(next(line for line in lines if line.startswith("ISO looked-at")).split()[-1])
    assert entry.stat().st_mtime < looked, (
        "the thief looked before the canary's entry was written, so its not finding it proves nothing: it must "
        "start after the canary ends (in `batch`, two notebooks run before it, two at a time)")


def test_earlier_outputs_other_caches_and_submissions_are_invisible(batch):
    """Item 6: files of earlier runs (CSV, feedback), other assignments' caches and submissions."""
    lines = found(batch, "probe")
    assert any(line.startswith("ISO cases-before") for line in lines), f"the probe did not run: {lines}"
    assert not [line for line in lines if line.startswith("ISO read-ok")], lines


def test_no_socket_reaches_anything(batch):
    """Item 2 (local pool): no TCP connection to 127.0.0.1, no Unix socket, abstract or on a path."""
    lines = found(batch, "probe")
    assert any(line.startswith("ISO tcp-blocked") for line in lines), lines
    assert not [line for line in lines if line.startswith(("ISO tcp-ok", "ISO unix-ok"))], lines
    assert batch["listener"].connections == 0


def test_cases_are_in_the_kernel_only_while_their_test_runs(batch):
    """Item 5: before any test, and after the tests that ran, the kernel's cases folder is empty (the honest
    students' full marks show each test had its cases)."""
    lines = found(batch, "probe")
    assert "ISO cases-before 0" in lines and "ISO cases-after 0" in lines, lines


def test_every_world_writable_folder_is_private_and_gone_after(batch):
    """Item 7: the probe walked the whole of its view and left a note in each world-writable folder it could
    write; none of those notes is on the machine."""
    lines = found(batch, "probe")
    assert not [line for line in lines if line.startswith("ISO walk-incomplete")], lines
    writable = next(line for line in lines if line.startswith("ISO writable")).split()[2:]
    assert "/tmp" in writable, f"the kernel should have a /tmp of its own: {writable}"
    left = [d for d in writable if Path(d, f"iso-note-{TOKEN}").exists()]
    assert not left, f"notes left on the machine's disk, readable by the next kernel: {left}"


def test_proc_shows_the_kernel_only_its_own_processes(batch):
    """Item 8: /proc lists no process of another user (the grader, other students, the machine's)."""
    assert "ISO proc-others 0" in found(batch, "probe")


def test_stale_scratch_folders_of_dead_processes_are_swept(batch):
    """Issue 28, item 5: a local batch that starts removes the kernel and batch folders of dead processes, and
    only those."""
    folders = batch["folders"]
    assert not folders["stale"].exists(), "the folder of a dead process was left in /tmp"
    assert folders["live"].exists() and folders["unmarked"].exists(), "a live run's folder was removed"


def test_sweep_spares_what_it_cannot_judge(tmp_path):
    (tmp_path / "llmcourse-kernel-x").mkdir()
    (tmp_path / "llmcourse-kernel-x" / sandbox.OWNER).write_text("not a pid")
    (tmp_path / "llmcourse-grade-y").mkdir()
    (tmp_path / "llmcourse-grade-y" / sandbox.OWNER).write_text("999999999 12")  # no such process
    (tmp_path / "other-z").mkdir()
    (tmp_path / "other-z" / sandbox.OWNER).write_text("999999999 12")
    assert sandbox.sweep_stale(str(tmp_path)) == [str(tmp_path / "llmcourse-grade-y")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llmcourse-kernel-x", "other-z"]
