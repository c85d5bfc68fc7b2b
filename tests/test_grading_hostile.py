"""`llmcourse grade` on broken, careless and hostile submissions: every student gets a correct row, nobody gains
points they did not earn, nothing leaks, the submissions are untouched, and the batch always finishes."""
from __future__ import annotations

import csv
import hashlib
import html
import os
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

import hostile
from llmcourse import grading
from llmcourse.grading.batch import attempts, prepare
from llmcourse.grading.batch.rows import CANARY


LIMITS = grading.Limits(cell_timeout=4, student_timeout=240)  # a cell that sleeps is stopped after 20 s on the clock


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
            h.update(oct(path.stat().st_mode).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    subs = hostile.build(base / "submissions")
    before = tree_hash(subs)
    uids = []  # the block of user ids this batch's kernels ran as (other runs on the machine have others)
    setting = prepare.batch_setting

    def recording(*args, **kwargs):
        s = setting(*args, **kwargs)
        uids.append(range(s["uid_base"], s["uid_base"] + prepare.UID_BLOCK))
        return s
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare, "batch_setting", recording)
        rows = grading.grade(subs, hostile.ASSIGNMENT, out=base / "grades.csv", feedback=base / "feedback", jobs=2,
                             limits=LIMITS, cache=base / "cache", progress=False)
    return {"rows": {r.student: r for r in rows}, "base": base, "subs": subs, "before": before, "uids": uids[0]}


def feedback_text(batch, student: str) -> str:
    page = (batch["base"] / "feedback" / f"{student}.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_every_student_gets_one_row(batch):
    with open(batch["base"] / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["student"] for r in rows] == sorted([*hostile.EXPECTED, "honest"])
    assert all(r["max_score"] == rows[0]["max_score"] for r in rows)


def test_the_honest_student_is_not_harmed(batch):
    row = batch["rows"]["honest"]
    assert row.status == "graded" and row.score == row.max_score, row.message


@pytest.mark.parametrize("case", sorted(hostile.EXPECTED))
def test_each_case_gets_the_row_it_deserves(batch, case):
    status, zero, full = hostile.EXPECTED[case]
    row = batch["rows"][case]
    if case == "kill_parent" and os.geteuid() != 0:
        status = "graded"  # without root the kernel can kill its grading process: the row then says so
    assert row.status.startswith(status), f"{case}: status {row.status!r}"
    for cell in zero:
        assert row.cells.get(cell, (0, 0))[0] == 0, f"{case}: {cell} must score 0, got {row.cells.get(cell)}"
    for cell in full:
        assert row.cells[cell][0] == row.cells[cell][1] > 0, f"{case}: {cell} must keep its points ({row.message})"
    if status.startswith("not graded"):
        assert row.score is None, f"{case}: a submission that was not graded must have no score, not {row.score}"
    else:
        assert row.score < row.max_score or case == "huge_output"


def test_reference_use_is_named(batch):
    for case in ["reference_import", "reference_wrapper"]:
        assert "reference implementation" in batch["rows"][case].message, batch["rows"][case].message


def test_patched_checks_gain_nothing_and_say_so(batch):
    assert "was not checked" in batch["rows"]["patch_checks"].message
    assert "divide it by the product" in batch["rows"]["patch_numpy_torch_builtins"].message


def test_timeouts_are_per_cell_and_the_rest_is_graded(batch):
    for case in ["infinite_loop", "sleep_forever"]:
        assert batch["rows"][case].score > 0
    assert f"longer than {LIMITS.cell_timeout} s" in batch["rows"]["infinite_loop"].message  # the test cell timed out
    assert "is not defined" in batch["rows"]["sleep_forever"].message  # the timed-out cell defined nothing


def test_a_fork_bomb_is_cut_down_and_its_cell_stopped_in_a_living_kernel(batch):
    """The sandbox kills the bomb's copies and reaps them, and the worker interrupts the cell until it stops: the
    kernel lives on (a kernel that had to die would say so in the status) and the next cells run in it."""
    row = batch["rows"]["fork_bomb"]
    assert row.status == "graded", row.status
    assert "is not defined" in row.message  # the test cell ran, in the same kernel, after the stopped cell


def test_edited_or_deleted_tests_run_as_written_by_the_instructor(batch):
    for case in ["test_replaced_by_pass", "test_deleted"]:
        assert "divide it by the product" in batch["rows"][case].message, batch["rows"][case].message


def test_a_dead_kernel_is_reported_and_still_gets_feedback(batch):
    for case in ["os_exit", "kill_self"]:
        row = batch["rows"][case]
        assert "kernel died in cell" in row.status and "on 2 runs" in row.status, row.status
        assert "the notebook's own code" in row.status
        assert (batch["base"] / "feedback" / f"{case}.html").exists(), f"{case} got no feedback page"
        assert "sinusoidal_positions" in feedback_text(batch, case)


def test_links_and_special_files_are_never_followed(batch):
    for case in hostile.LINK_CASES:
        row = batch["rows"][case]
        assert row.score is None and not row.cells, f"{case}: {row}"
        assert not (batch["base"] / "feedback" / f"{case}.html").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="private scratch folders need root (mount namespace)")
def test_scratch_folders_are_private_limited_and_cleared(batch):
    """Judges only what this batch's kernels (its own user ids) left, while other runs' folders come and go in
    /tmp (here: a thread that keeps making and removing a grading run's folders, owned by another run's user)."""
    row = batch["rows"]["fills_scratch"]
    text = feedback_text(batch, "fills_scratch")
    for where in [".", "/tmp", "/var/tmp", "/dev/shm"]:
        assert f"{where} stopped after" in text, f"writing to {where} was not limited: {text[:2000]}"
    assert row.cells["test_count_pairs"][0] > 0
    assert not Path("/tmp/passed-note.txt").exists(), "a kernel's /tmp is the machine's: students can pass files"
    ours = batch["uids"]
    other = ours.start - prepare.UID_BLOCK if ours.start - prepare.UID_BLOCK >= grading.UID_BASE else ours.stop
    with _another_run_in_tmp(other):
        files = [p for top in ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"] for p in _walk(Path(top))]
    left = [str(p) for p in files if p.name.startswith("hog") and p.name.endswith(".bin") and _owner(p) in ours]
    assert not left, f"files a kernel wrote are still there: {left[:5]}"
    owned = [str(p) for p in files if _owner(p) in ours]
    assert not owned, f"files of this batch's grading users are left behind: {owned[:5]}"


@contextmanager
def _another_run_in_tmp(uid: int):
    """Meanwhile, folders like another grading run's appear in /tmp and vanish, with files of its kernel's user."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            folder = Path(tempfile.mkdtemp(prefix="llmcourse-grade-churn-"))
            for i in range(20):
                (folder / f"f{i}").write_text("x")
                os.chown(folder / f"f{i}", uid, uid)
            shutil.rmtree(folder, ignore_errors=True)
            stop.wait(0.005)
    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _walk(top: Path):
    """Every path below `top`; folders that vanish while it walks (other runs' scratch) are skipped."""
    for folder, dirs, files in os.walk(top, onerror=lambda err: None):
        for name in dirs + files:
            yield Path(folder, name)


def _owner(path: Path) -> int:
    try:
        return path.lstat().st_uid
    except OSError:  # gone meanwhile
        return -1


@pytest.mark.skipif(os.geteuid() != 0, reason="hiding files from the kernel needs root (mount namespace, own uid)")
def test_secrets_are_out_of_the_kernels_reach(batch):
    text = feedback_text(batch, "reads_secrets")
    assert "secrets found: 0" in text, "the kernel could read a solution, gradebook, reference source or records"
    assert "LEAKED /" not in text


def test_no_feedback_shows_hidden_tests(batch):
    for page in (batch["base"] / "feedback").glob("*.html"):
        assert hostile.SECRET not in feedback_text(batch, page.stem), page.name


def test_huge_output_is_cut_in_feedback(batch):
    page = batch["base"] / "feedback" / "huge_output.html"
    assert page.stat().st_size < 2_000_000
    assert "output cut" in feedback_text(batch, "huge_output")


def test_submissions_are_untouched(batch):
    assert tree_hash(batch["subs"]) == batch["before"]


def test_no_process_of_a_kernel_survives(batch):
    if os.geteuid() != 0:
        pytest.skip("leftovers are found by their user id when grading as root")
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _uid(pid) in batch["uids"]]
    assert not left, f"processes of this batch's grading users still run: {left}"


def _uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def test_second_run_reuses_clean_grades_only(batch, monkeypatch):
    """Clean grades (and the canary) come from the cache; a kernel that died, a time limit or a machine fault
    is never cached: such a student is graded afresh."""
    regraded = []

    def record(student, index, data, row, s):
        regraded.append(student)
        row.status, row.score = "graded again", None
        return row, None
    monkeypatch.setattr(attempts, "_autograde", record)
    out = batch["base"] / "again.csv"
    rows = grading.grade(batch["subs"], hostile.ASSIGNMENT, out=out, jobs=2, limits=LIMITS,
                         cache=batch["base"] / "cache", progress=False)
    first = batch["rows"]
    assert CANARY not in regraded, "the canary's result should be cached like a grade"
    assert {"os_exit", "kill_self"} <= set(regraded), "a kernel that died must not be cached"
    assert not [s for s in regraded if first[s].clean], "clean grades should come from the cache"
    for row in rows:
        if first[row.student].clean:
            assert row.csv_row() == first[row.student].csv_row()


def test_summary_table_ends_with_totals(batch):
    text = grading.summary(sorted(batch["rows"].values(), key=lambda r: r.student))
    assert text.splitlines()[-1].startswith(f"{len(batch['rows'])} students: ")
    assert "need the instructor" in text
