"""A corpus of broken, careless and hostile submissions of 01_tokens, generated from the solution notebook.

Each case is a small edit of the solution (or of the released student notebook), so the corpus stays valid
when the exercise changes. `build(folder)` writes one student folder per case; `EXPECTED` says what each
row must show. Cell ids refer to the nbgrader grade_ids of 01_tokens.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat

from conftest import REPO

ASSIGNMENT = "01_tokens"
SECRET = "abababab cdcdcd abab"  # a hidden test's input in the source notebook: must never leak
ALL_TESTS = ["test_count_pairs", "test_merge", "test_train_bpe", "test_train_bpe_hidden", "test_encode", "test_decode",
             "test_encode_decode_hidden", "test_cosine_similarity", "test_sinusoidal_positions", "test_vectors_hidden"]
COSINE = ["test_cosine_similarity", "test_vectors_hidden"]
POSITIONS = ["test_sinusoidal_positions", "test_vectors_hidden"]
BPE = ["test_count_pairs", "test_merge", "test_train_bpe", "test_train_bpe_hidden", "test_encode", "test_decode",
       "test_encode_decode_hidden"]
WRONG_COSINE = "def cosine_similarity(a, b):\n    return (a * b).sum(dim=-1)\n"


def _solution() -> nbformat.NotebookNode:
    return nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)


def _release() -> nbformat.NotebookNode:
    return nbformat.read(REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _edit(cell_id: str, source: str, base=_solution, prepend: bool = False):
    def make():
        nb = base()
        cell = _cell(nb, cell_id)
        cell.source = source + ("\n" + cell.source if prepend else "")
        return nb
    return make


def _many(*edits):
    def make():
        nb = _solution()
        for cell_id, source in edits:
            _cell(nb, cell_id).source = source
        return nb
    return make


def _delete_test_cell():
    nb = _solution()
    _cell(nb, "cosine_similarity").source = WRONG_COSINE
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_cosine_similarity"]
    return nb


READ_SECRETS = f'''
import glob, os, pathlib
found = []
import llmcourse
candidates = [pathlib.Path(llmcourse.__file__).parents[2] / "solutions/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
              pathlib.Path("{REPO}/solutions/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"),
              pathlib.Path("{REPO}/src/llmcourse/tokens.py")]
candidates += [pathlib.Path(p) for p in glob.glob("/tmp/llmcourse-grade-*/**/*.ipynb", recursive=True)]
candidates += [pathlib.Path(p) for p in glob.glob("/tmp/llmcourse-grade-*/**/gradebook.db", recursive=True)]
candidates += [pathlib.Path(p) for p in glob.glob("/tmp/llmcourse-kernel-*/records.jsonl")]
own = os.environ.get("LLMCOURSE_GRADING", "?")
for path in candidates:
    if str(path).startswith(own):
        continue  # the kernel's own folder: its cases and records are not secret
    try:
        text = path.read_bytes()
        found.append(str(path))
        print("LEAKED", path, text[:2000])
    except OSError:
        pass
print("secrets found:", len(found))
''' + WRONG_COSINE

FILL_SCRATCH = '''
import os
block = b"x" * 2**20
for where in [".", "/tmp", "/var/tmp", "/dev/shm"]:
    written = 0
    try:
        for i in range(4):
            with open(os.path.join(where, f"hog{i}.bin"), "wb") as f:
                for _ in range(200):
                    f.write(block)
                    written += 1
    except OSError as err:
        print(where, "stopped after", written, "MiB:", err)
    else:
        print(where, "took", written, "MiB")
with open("/tmp/passed-note.txt", "w") as f:
    f.write("a file another student could read")
''' + WRONG_COSINE

CASES = {
    # name: (notebook maker, expected status prefix, cells that must be 0, cells that must be full)
    "unfinished": (_release, "graded", ALL_TESTS, []),
    "syntax_error": (_edit("cosine_similarity", "def cosine_similarity(a, b)\n    return a"), "graded", COSINE, BPE + ["test_sinusoidal_positions"]),
    "import_error": (_edit("cosine_similarity", "import numpy_that_does_not_exist", prepend=True), "graded", COSINE, BPE),
    "name_missing": (_edit("encode_decode", "def encode(text, merges):\n    return list(text.encode())\n"), "graded", ["test_decode"], COSINE),
    "infinite_loop": (_edit("sinusoidal_positions", "def sinusoidal_positions(n, d):\n    while True:\n        pass\n"), "graded", POSITIONS, BPE + ["test_cosine_similarity"]),
    "sleep_forever": (_edit("cosine_similarity", "import time\ntime.sleep(10**6)", prepend=True), "graded", COSINE, BPE + ["test_sinusoidal_positions"]),
    "sys_exit": (_edit("cosine_similarity", "import sys\nsys.exit()", prepend=True), "graded", COSINE, BPE + ["test_sinusoidal_positions"]),
    "os_exit": (_edit("sinusoidal_positions", "import os\nos._exit(1)"), "graded, but", POSITIONS, BPE),
    "kill_self": (_edit("sinusoidal_positions", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"), "graded, but", POSITIONS, BPE),
    "kill_parent": (_edit("cosine_similarity", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", prepend=True), "graded", COSINE, BPE),
    "memory_bomb": (_edit("cosine_similarity", "hog = bytearray(50 * 10**9)", prepend=True), "graded", COSINE, BPE + ["test_sinusoidal_positions"]),
    "fork_bomb": (_edit("sinusoidal_positions", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"), "graded", POSITIONS, BPE),
    "huge_output": (_edit("cosine_similarity", "print('x' * 100_000_000)", prepend=True), "graded", [], ALL_TESTS),
    "test_replaced_by_pass": (_many(("cosine_similarity", WRONG_COSINE), ("test_cosine_similarity", "pass")), "graded", COSINE, BPE),
    "test_deleted": (_delete_test_cell, "graded", COSINE, BPE),  # the deleted test is put back and runs
    "patch_checks": (_edit("cosine_similarity", WRONG_COSINE + "import llmcourse.checks as C\nC.check_cosine_similarity = lambda f, **k: None\n"
                           "check_cosine_similarity = lambda f, **k: print('✓ all good')\n"), "graded", COSINE, BPE),
    "patch_numpy_torch_builtins": (_edit("cosine_similarity", WRONG_COSINE + "import builtins, numpy, torch\nnumpy.allclose = lambda *a, **k: True\n"
                                         "torch.allclose = lambda *a, **k: True\nclass Quiet(Exception):\n    pass\nbuiltins.AssertionError = Quiet\n"), "graded", COSINE, BPE),
    "reference_import": (_edit("cosine_similarity", "from llmcourse.tokens import cosine_similarity\n"), "graded", COSINE, BPE),
    "reference_wrapper": (_edit("cosine_similarity", "import llmcourse.tokens as T\n\ndef cosine_similarity(a, b):\n    return T.cosine_similarity(a, b)\n"), "graded", COSINE, BPE),
    "reads_secrets": (_edit("cosine_similarity", READ_SECRETS), "graded", COSINE, BPE),
}

if os.geteuid() == 0:  # as root, each kernel has private, size-limited scratch folders; without root it would
    # fill the machine's own /tmp
    CASES["fills_scratch"] = (_edit("cosine_similarity", FILL_SCRATCH), "graded", COSINE, BPE)

FILE_CASES = {
    # name: (files to write, expected status prefix)
    "empty_file": ({"work.ipynb": b""}, "not graded: unreadable notebook"),
    "not_json": ({"work.ipynb": b"this is not a notebook"}, "not graded: unreadable notebook"),
    "other_assignment": ({"work.ipynb": nbformat.writes(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('hello')", metadata={"nbgrader": {"grade_id": "other", "solution": True}})
    ])).encode()}, "not graded: not a 01_tokens notebook"),
    "two_notebooks": ({"a.ipynb": b"{}", "b.ipynb": b"{}"}, "not graded: several notebooks"),
    "no_notebook": ({"notes.txt": b"I forgot"}, "not graded: no notebook"),
}

LINK_CASES = {
    # name: expected status prefix; the entries are made by `build` (links to the instructor's solution)
    "link_to_solution_notebook": "not graded: the submission holds a symbolic link",
    "link_folder": "not graded: the student's entry is a symbolic link",
    "fifo": "not graded: work.ipynb is not a regular file",
}

EXPECTED = {name: (status, zero, full) for name, (_, status, zero, full) in CASES.items()}
EXPECTED.update({name: (status, ALL_TESTS, []) for name, (_, status) in FILE_CASES.items()})
EXPECTED.update({name: (status, ALL_TESTS, []) for name, status in LINK_CASES.items()})


def build(folder: Path) -> Path:
    """Write every case as SUBMISSIONS/<case>/..., plus one honest solution; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (make, *_) in CASES.items():
        (folder / name).mkdir()
        nbformat.write(make(), folder / name / "submission.ipynb")
    for name, (files, _) in FILE_CASES.items():
        (folder / name).mkdir()
        for file, data in files.items():
            (folder / name / file).write_bytes(data)
    solution = REPO / "solutions" / ASSIGNMENT
    (folder / "link_to_solution_notebook").mkdir()
    (folder / "link_to_solution_notebook" / f"{ASSIGNMENT}.ipynb").symlink_to(solution / f"{ASSIGNMENT}.ipynb")
    (folder / "link_folder").symlink_to(solution, target_is_directory=True)
    (folder / "fifo").mkdir()
    os.mkfifo(folder / "fifo" / "work.ipynb")
    (folder / "honest").mkdir()
    nbformat.write(_solution(), folder / "honest" / "submission.ipynb")
    return folder
