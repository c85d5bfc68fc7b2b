"""The instructor's class report (`llmcourse grade ... --report`) and term page (`llmcourse report`).

The fast tests group real check messages and build pages from made-up rows; the others build the report of
every assignment from the session's `graded` run (no grading of their own) and hold it against its CSV."""
from __future__ import annotations

import csv
import html
import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from html.parser import HTMLParser
from urllib.parse import unquote

import nbformat
import pytest
import torch

from conftest import REPO, in_the_batch, planted_for, student_of
from llmcourse import checks, cli, grading
from llmcourse.checks.core import CheckFailed
from llmcourse.grading.batch import report
from llmcourse.grading.batch.rows import HIDDEN_FAILED, Row

ASSIGNMENTS = grading.assignments(REPO)


class Addresses(HTMLParser):
    """Every address an HTML page's tags name (src, href, ...), and what its <style> elements hold."""

    def __init__(self, raw: str):
        super().__init__()
        self.addresses: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(raw)

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        self.addresses += [v or "" for k, v in attrs if k in ("src", "href", "action", "data", "poster", "srcset")]
        self.styles += [v or "" for k, v in attrs if k == "style"]

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def requests_made(raw: str) -> list[str]:
    """What opening the page would fetch: any address with a scheme or host but inline data, and CSS imports."""
    page = Addresses(raw)
    remote = [a for a in page.addresses if re.match(r"\s*(?:[a-z][a-z0-9+.-]*:|//)", a, re.I)
              and not a.startswith("data:")]  # inline: an embedded image, an empty icon
    return remote + [s for s in page.styles if re.search(r"url\s*\(|@import", s, re.I)]


def page_text(path: Path) -> str:
    """The visible text of an HTML page: tags removed, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def planted_function(assignment: str, planted: str, name: str):
    """A planted wrong function of 01_tokens' vector part (it needs only torch)."""
    namespace = {"torch": torch, "math": math}
    exec(planted_for(assignment)[planted]["source"], namespace)
    return namespace[name]


def message_of(check_name: str, fn, **params) -> str:
    """The message a check says at home, on the cases made from `params`."""
    with pytest.raises(CheckFailed) as err:
        checks.REGISTRY[check_name](fn, **params)
    return str(err.value)


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def csv_cell_message(row: dict, grade_id: str) -> str:
    """The message of one test cell in a CSV row's message column ('' when it passed)."""
    for part in row["message"].split(" | "):
        if part.startswith(grade_id + ": "):
            return part[len(grade_id) + 2:]
    return ""


def test_requests_made_finds_what_a_page_would_fetch():
    page = ('<img src="https://x.org/y.png"><link href="//cdn.x/a.css"><a href="ada.html">ada</a>'
            '<img src="data:image/png;base64,AAAA"><style>@import "a.css";</style><p>src=http://x.org, as text</p>')
    assert requests_made(page) == ["https://x.org/y.png", "//cdn.x/a.css", '@import "a.css";']


# --- grouping messages into mistakes (fast) ---------------------------------------------------------------

@pytest.mark.parametrize("planted,check,name,params", [
    ("positions_sin_cos_swapped", "check_sinusoidal_positions", "sinusoidal_positions",
     [dict(sizes=((4, 8),)), dict(sizes=((7, 64),)), dict(sizes=((50, 16),))]),
    ("cosine_unnormalised", "check_cosine_similarity", "cosine_similarity",
     [dict(shapes=((8,),)), dict(shapes=((5, 16),)), dict(seed=3, shapes=((2, 3, 7),))]),
    ("count_pairs_no_overlap", "check_count_pairs", "count_pairs",
     [dict(cases=([5, 5, 5, 5],)), dict(cases=([1, 3, 3, 3],)), dict(cases=([9, 9, 9, 9, 9, 9],))]),
])
def test_one_mistake_on_other_inputs_is_one_group(planted, check, name, params):
    fn = planted_function("01_tokens", planted, name)
    messages = [message_of(check, fn, **p) for p in params]
    assert len(set(messages)) > 1, "the cases should give messages with other numbers"
    assert all(planted_for("01_tokens")[planted]["message"] in m for m in messages), messages
    assert len({report.mistake_key(m) for m in messages}) == 1, [report.mistake_key(m) for m in messages]


def test_a_class_of_mistakes_is_counted_most_common_first():
    swapped = planted_function("01_tokens", "positions_sin_cos_swapped", "sinusoidal_positions")
    unnormalised = planted_function("01_tokens", "cosine_unnormalised", "cosine_similarity")
    sizes = [(n, d) for n in (3, 5, 9) for d in (4, 8, 16, 32, 64)][:14]
    messages = {f"s{i:02}": message_of("check_sinusoidal_positions", swapped, sizes=(size,))
                for i, size in enumerate(sizes)}
    messages |= {f"u{i}": message_of("check_cosine_similarity", unnormalised, seed=i) for i in range(3)}
    messages |= {f"n{i}": "`sinusoidal_positions` is not written yet: replace `raise NotImplementedError()` "
                 "with your code." for i in range(2)}
    groups = report.group_messages(messages)
    assert [g["count"] for g in groups] == [14, 3, 2]
    assert "sin and cos are swapped" in groups[0]["message"]
    assert groups[0]["students"] == sorted(s for s in messages if s.startswith("s"))
    assert "plain dot product" in groups[1]["message"]


def test_different_mistakes_of_one_function_stay_apart():
    keys = {report.mistake_key(m) for m in [
        "`sinusoidal_positions` for n_positions=4, d_model=8: sin and cos are swapped: even columns hold sines.",
        "`sinusoidal_positions` for n_positions=4, d_model=8: the sines and cosines must be interleaved.",
        "`sinusoidal_positions` for n_positions=4, d_model=8 is wrong at index (1, 2): got 0.5, expected 0.7.",
        "`sinusoidal_positions((4, 8))` raised TypeError: bad operand",
        "`sinusoidal_positions((4, 8))` raised ValueError: bad operand"]}
    assert len(keys) == 5


def test_statuses_group_without_their_details():
    same = ["several notebooks, keep one: a.ipynb, b.ipynb", "several notebooks, keep one: x/y.ipynb, c.ipynb, d.ipynb"]
    assert report.status_key(same[0]) == report.status_key(same[1])
    assert report.status_key("no notebook: the folder holds no .ipynb file") != report.status_key(same[0])


# --- rows, old cache entries, pages from made-up rows (fast) ----------------------------------------------

def made_up_rows() -> list[Row]:
    cells = {"test_a": (0.0, 1.0), "test_b_hidden": (0.0, 1.0)}
    evil = "<script>alert('x')</script><img src=http://example.com/x.png>"
    return [
        Row("ada", "01_tokens", 2.0, 2.0, seconds=12.0, cells={"test_a": (1.0, 1.0), "test_b_hidden": (1.0, 1.0)},
            messages={"test_a": "", "test_b_hidden": ""}, hidden=["test_b_hidden"]),
        Row(evil, "01_tokens", 0.0, 2.0, seconds=30.5, cells=cells, hidden=["test_b_hidden"],
            messages={"test_a": f"`a` raised ValueError: {evil}", "test_b_hidden": "SECRET hidden input 31337"}),
        Row("slow", "01_tokens", 0.0, 2.0, status="graded, but stopped after 600 s (the notebook's time limit)",
            seconds=600.2, cells=cells, messages={"test_a": "`a` was not checked", "test_b_hidden": HIDDEN_FAILED},
            hidden=["test_b_hidden"]),
        Row("gone", "01_tokens", None, 2.0, status="not graded: the student's entry is a symbolic link (to /etc)"),
    ]


def test_an_old_cache_entry_loads_and_its_messages_are_read_from_the_message():
    saved = asdict(Row("old", "01_tokens", 1.0, 2.0, message="test_a: `a` is wrong | test_h: hidden tests failed",
                       cells={"test_a": (0.0, 1.0), "test_h": (0.0, 1.0), "test_c": (1.0, 1.0)}))
    for new_field in ("messages", "hidden", "seconds"):
        del saved[new_field]
    row = Row.from_dict(json.loads(json.dumps(saved)))
    assert row.cells["test_a"] == (0.0, 1.0) and row.seconds is None
    assert report.cell_messages(row, ["test_a", "test_h", "test_c"]) == {
        "test_a": "`a` is wrong", "test_h": "hidden tests failed", "test_c": ""}


def test_page_escapes_student_text_hides_hidden_messages_and_makes_no_request(tmp_path):
    rows = made_up_rows()
    data = report.write_report(rows, tmp_path / "report.html", "01_tokens", tests=[], csv_path=tmp_path / "g.csv",
                               limits=grading.Limits())
    raw = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in raw and "<img src=http" not in raw
    assert "&lt;script&gt;alert(&#x27;x&#x27;)" in raw, "the student's name and message are shown, escaped"
    assert not requests_made(raw), requests_made(raw)
    for text in (raw, (tmp_path / "report.json").read_text(encoding="utf-8")):
        assert "SECRET" not in text and "31337" not in text, "a hidden test cell's message must never be shown"
    hidden = next(c for c in data["cells"] if c["grade_id"] == "test_b_hidden")
    assert hidden["hidden"] and hidden["mistakes"] == [] and hidden["passed"] == 1 and hidden["students"] == 3
    assert data["summary"] | {"mean": None} == {"students": 4, "graded": 3, "not_graded": 1, "clean": 2,
                                                 "mean": None, "median": 0.0}
    assert {s["student"]: s["time_limit"] for s in data["students"]}["slow"] == "notebook"
    assert [p["count"] for p in data["problems"]] == [1, 1]


def write_grades(path: Path, rows: list[Row]) -> Path:
    grading.write_csv(rows, path)
    return path


def test_rows_from_a_runs_cache_leave_out_the_canary(tmp_path):
    for row in (Row(".canary", "01_tokens", 2.0, 2.0), Row("ada", "01_tokens", 1.0, 2.0, cells={"t": (1.0, 2.0)})):
        (tmp_path / f"{row.student}.json").write_text(json.dumps({"key": "k", "row": asdict(row), "html": ""}))
    rows = report.rows_from_cache(tmp_path)
    assert [r.student for r in rows] == ["ada"] and rows[0].cells == {"t": (1.0, 2.0)}


def students_scores(term: dict, student: str) -> dict:
    return next(s["scores"] for s in term["students"] if s["student"] == student)


def test_term_page_from_two_csvs_with_trend_and_reports(tmp_path):
    first = write_grades(tmp_path / "grades-01_tokens.csv", [
        Row("ada", "01_tokens", 5.0, 10.0), Row("bob", "01_tokens", 10.0, 10.0), Row("cy", "01_tokens", 8.0, 10.0)])
    second = write_grades(tmp_path / "grades-02_word2vec.csv", [
        Row("ada", "02_word2vec", 20.0, 20.0), Row("bob", "02_word2vec", 10.0, 20.0),
        Row("cy", "02_word2vec", None, 20.0, status="not graded: the grading environment failed"),
        Row("dee", "02_word2vec", 0.0, 20.0, status="no notebook: the folder holds no .ipynb file")])
    report.write_report([Row("ada", "01_tokens", 5.0, 10.0, cells={"t": (0.0, 5.0)}, messages={"t": "`f` is off"})],
                        tmp_path / "report-01.html", "01_tokens", tests=[], csv_path=first)
    data = report.write_term([second, first], tmp_path / "term" / "term.html")
    assert [a["assignment"] for a in data["assignments"]] == ["01_tokens", "02_word2vec"]
    trends = {s["student"]: s["trend"] for s in data["students"]}
    assert trends["ada"] == pytest.approx(0.5) and trends["bob"] == pytest.approx(-0.5) and trends["cy"] is None
    one, two = data["assignments"]
    assert one["report"] == "../report-01.html" and two["report"] is None
    assert two["not_graded"] == ["cy", "dee"] and two["mean"] == pytest.approx(0.75)
    assert students_scores(data, "cy") == {"01_tokens": 0.8, "02_word2vec": None}
    assert students_scores(data, "dee") == {"01_tokens": None, "02_word2vec": None}, "listed, though never graded"
    text = page_text(tmp_path / "term" / "term.html")
    assert "+50 points / assignment" in text and "-50 points / assignment" in text
    assert not requests_made((tmp_path / "term" / "term.html").read_text(encoding="utf-8"))


def test_report_command_says_what_is_missing(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "t.html")]) == 2
    assert "nope.csv" in capsys.readouterr().err


# --- the report of every assignment's graded batch --------------------------------------------------------

class Reports(dict):
    """{assignment: (the report's JSON, its page)} of each assignment's graded batch, written when first asked for,
    in a folder of its own (links to the feedback relative)."""

    def __init__(self, graded, tmp_path_factory):
        super().__init__()
        self.graded, self.factory = graded, tmp_path_factory

    def __missing__(self, assignment: str) -> tuple[dict, Path]:
        result = self.graded[assignment]
        page = self.factory.mktemp(f"report-{assignment}") / "report.html"
        rows = sorted(result["rows"].values(), key=lambda r: r.student)
        report.write_report(rows, page, assignment, feedback=result["feedback"], csv_path=result["csv"],
                            limits=grading.Limits())
        self[assignment] = (json.loads(page.with_suffix(".json").read_text(encoding="utf-8")), page)
        return self[assignment]


@pytest.fixture(scope="session")
def reports(graded, tmp_path_factory) -> Reports:
    return Reports(graded, tmp_path_factory)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_rows_keep_messages_and_seconds(graded, assignment):
    for row in graded[assignment]["rows"].values():
        assert row.seconds is not None and row.seconds > 0, f"{row.student}: the notebook's seconds"
        assert set(row.messages) == set(row.cells) and row.hidden
        assert all(row.messages[g] in ("", HIDDEN_FAILED) for g in row.hidden), row.messages


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_report_counts_equal_the_csv(graded, reports, assignment):
    data, _ = reports[assignment]
    rows = csv_rows(graded[assignment]["csv"])
    scored = [r for r in rows if r["score"] != "" and r["status"].startswith("graded")]
    scores = sorted(float(r["score"]) for r in scored)
    assert data["summary"]["students"] == len(rows)
    assert data["summary"]["graded"] == len(scored) and data["summary"]["not_graded"] == len(rows) - len(scored)
    assert data["summary"]["mean"] == pytest.approx(sum(scores) / len(scores))
    assert sorted(data["scores"]) == scores
    for cell in data["cells"]:
        failed = [r for r in scored if csv_cell_message(r, cell["grade_id"])]
        assert cell["students"] == len(scored) and cell["passed"] == len(scored) - len(failed), cell["grade_id"]
        if not cell["hidden"]:
            assert sum(m["count"] for m in cell["mistakes"]) == len(failed), cell["grade_id"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_each_planted_mistake_appears_with_its_count(graded, reports, assignment):
    data, page = reports[assignment]
    rows = csv_rows(graded[assignment]["csv"])
    text = page_text(page)
    for planted in in_the_batch(assignment):
        spec = planted_for(assignment)[planted]
        student = student_of(assignment, planted)  # its notebook may hold other mistakes (`batch_students`)
        row = next(r for r in rows if r["student"] == student)
        named = [c for c in data["cells"]
                 if not c["hidden"] and spec["message"] in csv_cell_message(row, c["grade_id"])]
        assert named, f"{planted}: no visible cell says {spec['message']!r}"
        for cell in named:
            group = next(m for m in cell["mistakes"] if student in m["students"])
            assert spec["message"] in group["message"], f"{planted} in {cell['grade_id']}: {group['message']}"
            # the students whose message in this cell is the group's (one message may extend another:
            # 03's first-sentence hint adds a sentence to the subject-ignored one, so a substring is not enough)
            key = report.mistake_key(group["message"])
            said = [r["student"] for r in rows if report.mistake_key(csv_cell_message(r, cell["grade_id"])) == key]
            assert group["count"] == len(said) and sorted(group["students"]) == sorted(said), group
            assert group["message"] in text


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_report_shows_hidden_tests_only_by_name(reports, assignment):
    data, page = reports[assignment]
    solution = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    blocks = [b for c in solution.cells for b in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END", c.source, re.S)]
    lines = [line.strip() for b in blocks for line in b.splitlines() if line.strip()]
    literals = re.findall(r'"([^"]{6,})"', "\n".join(blocks))
    hidden = [c for c in data["cells"] if c["hidden"]]
    assert lines and hidden
    text = page_text(page)
    for shown in (text, page.with_suffix(".json").read_text(encoding="utf-8")):
        for secret in lines + literals:
            assert secret not in shown, f"the report shows a hidden test: {secret!r}"
    for cell in hidden:
        assert cell["grade_id"] in text and cell["mistakes"] == []


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_report_is_offline_and_links_every_feedback_page(graded, reports, assignment):
    data, page = reports[assignment]
    raw = page.read_text(encoding="utf-8")
    assert not requests_made(raw), f"the report requests something: {requests_made(raw)}"
    assert raw.count("data:image/png;base64,") >= 2, "the histogram and the times are embedded images"
    links = re.findall(r'<a href="([^"]+)"', raw)
    assert len(links) == len(list(graded[assignment]["feedback"].glob("*.html")))
    for link in links:
        assert (page.parent / unquote(html.unescape(link))).resolve().is_file(), link


def test_term_page_from_two_graded_assignments(graded, reports, tmp_path):
    one, two = ASSIGNMENTS[:2]
    for assignment in (one, two):  # each CSV with its report's JSON beside it
        (tmp_path / assignment).mkdir()
        csv_copy = tmp_path / assignment / f"grades-{assignment}.csv"
        csv_copy.write_bytes(graded[assignment]["csv"].read_bytes())
        data = dict(reports[assignment][0], csv=csv_copy.name)
        (tmp_path / assignment / "report.json").write_text(json.dumps(data))
    term = report.write_term([tmp_path / one / f"grades-{one}.csv", tmp_path / two / f"grades-{two}.csv"],
                             tmp_path / "term.html")
    assert [a["assignment"] for a in term["assignments"]] == [one, two]
    students = {s["student"]: s for s in term["students"]}
    assert set(students) == set(graded[one]["rows"]) | set(graded[two]["rows"])
    assert students["stub"]["scores"] == {one: 0.0, two: 0.0} and students["stub"]["trend"] == 0
    assert all(a["report"] == f"{a['assignment']}/report.html" and a["top_mistake"] for a in term["assignments"])
    assert "stub" in page_text(tmp_path / "term.html")


def test_grade_command_writes_the_report(graded, tmp_path, monkeypatch, capsys):
    """`llmcourse grade --report` on the graded batch of 01_tokens (grade itself replaced by its rows)."""
    result = graded["01_tokens"]
    rows = sorted(result["rows"].values(), key=lambda r: r.student)

    def fake_grade(submissions, assignment, out=None, **kwargs):
        grading.write_csv(rows, out)
        return rows

    monkeypatch.setattr(grading, "grade", fake_grade)
    argv = ["grade", str(result["inputs"]), "--assignment", "01_tokens", "--out", str(tmp_path / "grades.csv"),
            "--feedback", str(result["feedback"]), "--report", str(tmp_path / "report.html")]
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["csv"] == "grades.csv" and [s["student"] for s in data["students"]] == [r.student for r in rows]
    assert "class report" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "grades.csv"), "--out", str(tmp_path / "term.html")]) == 0
    assert (tmp_path / "term.html").is_file()
