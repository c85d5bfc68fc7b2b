"""`llmcourse grade ... --report` and `llmcourse report`: what the class got right and wrong, for the instructor.

`write_report` turns the rows of one grading run into one offline HTML page (plots embedded as PNG, no
script, no request) and the same data as JSON beside it: the score distribution, who could not be graded
and why, per test cell the pass rate and its failure messages grouped into mistakes and counted, per graded
function the most common mistake first, a link to every student's feedback page and the time every
notebook took. Hidden test cells appear only as pass rates under their names: rows never hold their messages.
`write_term` reads several assignments' grades.csv (and the JSON of their reports) into one term page.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

import argparse
import base64
import copy
import csv
import html
import io
import json
import os
import re
import statistics
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

KIND = "llmcourse grading report"  # marks our JSON, so a term page finds the reports of its CSVs
FORMAT = 1
HIDDEN_FAILED = "hidden tests failed"

DESCRIPTION = ("A term page from several assignments' grades CSVs (written by `llmcourse grade`): each student's "
               "score per assignment and trend, each assignment's mean and most common mistake. The JSON of each "
               "CSV's report (`llmcourse grade ... --report`) is used when it lies beside the CSV.")


# --- grouping messages into mistakes ----------------------------------------------------------------------

_CALL = re.compile(r"`([A-Za-z_][\w.]*)\((?:[^`]*)\)`")                      # `merge([1, 2], (1, 2), 256)`
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")          # a repr of a string
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?(?![\w.]*\w)", re.I)
_PLAIN = re.compile(r"[(\[{](?:\s|N|…|'…'|,|:|\.|True|False|None)*[)\]}]")    # a tuple, list or dict of values
_RUN = re.compile(r"(?:N|…|'…')(?:\s*[,:]\s*(?:N|…|'…'))+")                  # 1, 2, 3 (a cut repr has no ')')


def mistake_key(message: str) -> str:
    """What stays of a check's message when its inputs and numbers are taken out: messages with the same
    key name the same mistake. `count_pairs([5, 5, 5, 5])` and `count_pairs([5, 5])` counting too few
    pairs, or sin and cos swapped for d_model=8 or 64, give one key; different named mistakes never do."""
    key = _CALL.sub(lambda m: f"`{m.group(1)}(…)`", message.strip())
    key = _QUOTED.sub("'…'", key)
    key = _NUMBER.sub("N", key)
    for _ in range(20):  # innermost brackets first: {(1, 2): 3} -> {…: N} -> …
        shorter = _RUN.sub("…", _PLAIN.sub("…", key))
        if shorter == key:
            break
        key = shorter
    return re.sub(r"\s+", " ", key)


def group_messages(messages: dict[str, str]) -> list[dict]:
    """{student: message} -> mistakes, most students first: each with the message most of them got (with its
    real inputs), how many students and who."""
    groups: dict[str, list[str]] = {}
    for student, message in sorted(messages.items()):
        groups.setdefault(mistake_key(message), []).append(student)
    out = []
    for students in groups.values():
        shown, _ = Counter(messages[s] for s in students).most_common(1)[0]
        out.append({"message": shown, "count": len(students), "students": students})
    return sorted(out, key=lambda g: (-g["count"], g["message"]))


def cell_messages(row, grade_ids: list[str]) -> dict[str, str]:
    """The message of each test cell of a row ('' when passed). Rows graded before messages were kept per
    cell (an older cache) are read from their combined `message` ("test_a: why | test_b: why")."""
    if row.messages:
        return dict(row.messages)
    found = {g: "" for g in row.cells}
    for part in row.message.split(" | "):
        grade_id, _, text = part.partition(": ")
        if grade_id in grade_ids or grade_id in row.cells:
            found[grade_id] = text
    return found


def rows_from_cache(cache: Path) -> list:
    """The rows a grading run kept in its cache (`.llmcourse-grade-cache/ASSIGNMENT/` beside its CSV), to make
    a report again without grading. Only clean grades are cached: the rows a run could not grade are not there."""
    from llmcourse.grading.batch.rows import Row

    rows = []
    for path in sorted(Path(cache).glob("*.json")):
        rows.append(Row.from_dict(json.loads(path.read_text(encoding="utf-8"))["row"]))
    return sorted((r for r in rows if not r.student.startswith(".")), key=lambda r: r.student)  # not the canary


# --- one assignment ---------------------------------------------------------------------------------------

def source_tests(assignment: str, root: Path | None = None) -> list | None:
    """The assignment's test cells (judge.TestCell, with the checks they call), or None without its source."""
    import nbformat

    from llmcourse.grading.batch import judge
    from llmcourse.grading.course import REPO

    sources = sorted(((root or REPO) / "solutions" / assignment).glob("*.ipynb"))
    return judge.test_cells(nbformat.read(sources[0], as_version=4)) if sources else None


def build(rows: list, assignment: str, tests: list | None = None, feedback: Path | None = None,
          base: Path | None = None, limits=None, csv_path: Path | None = None) -> dict:
    """The report's data (what report.json holds): `rows` from `grade` (or its cache); `tests` the
    assignment's test cells (for the functions they check; else only cell names); `feedback` the folder of
    feedback pages, linked relative to `base`, the report's folder; `limits` the Limits graded under.
    A folder name that is not UTF-8 is shown with U+FFFD for its odd bytes."""
    from llmcourse.grading.batch.rows import feedback_name, shown_name

    pages = {shown_name(r.student): feedback_name(r.student) for r in rows}
    rows = [r if shown_name(r.student) == r.student else _renamed(r, shown_name(r.student)) for r in rows]
    graded = [r for r in rows if r.score is not None and r.status.startswith("graded")]
    scores = [r.score for r in graded]
    max_score = max((r.max_score for r in rows), default=0.0)
    cells = _cells(rows, tests)
    return {
        "kind": KIND, "format": FORMAT, "assignment": assignment,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "csv": Path(csv_path).name if csv_path else None, "max_score": max_score,
        "limits": {"cell_timeout": limits.cell_timeout, "student_timeout": limits.student_timeout} if limits else None,
        "summary": {"students": len(rows), "graded": len(graded), "not_graded": len(rows) - len(graded),
                    "clean": sum(r.status == "graded" and r.score is not None for r in rows),
                    "mean": statistics.fmean(scores) if scores else None,
                    "median": statistics.median(scores) if scores else None},
        "scores": scores,
        "problems": _problems(rows),
        "cells": cells,
        "functions": _functions(cells),
        "students": [_student(r, feedback, base, pages.get(r.student)) for r in sorted(rows, key=lambda r: r.student)],
    }


def _cells(rows: list, tests: list | None) -> list[dict]:
    """Per test cell: points, hidden or not, the functions it checks, pass rate and (visible cells only) mistakes."""
    order = [t.grade_id for t in tests] if tests else list(dict.fromkeys(g for r in rows for g in r.cells))
    info = {t.grade_id: t for t in tests or []}
    hidden = {g for r in rows for g in r.hidden} | {t.grade_id for t in tests or [] if t.hidden}
    out = []
    for grade_id in order:
        taken = [r for r in rows if grade_id in r.cells]
        messages = {r.student: cell_messages(r, order).get(grade_id, "") for r in taken}
        failed = {r.student: messages[r.student] or "lost its points without a message" for r in taken
                  if messages[r.student] or r.cells[grade_id][0] < r.cells[grade_id][1]}
        test = info.get(grade_id)
        cell = {"grade_id": grade_id, "hidden": grade_id in hidden,
                "points": test.points if test else max((r.cells[grade_id][1] for r in taken), default=0.0),
                "functions": list(dict.fromkeys(name.removeprefix("check_") for name, _ in test.calls)) if test else [],
                "students": len(taken), "passed": len(taken) - len(failed),
                "pass_rate": (len(taken) - len(failed)) / len(taken) if taken else None}
        cell["mistakes"] = [] if cell["hidden"] else group_messages(failed)
        out.append(cell)
    return out


def _functions(cells: list[dict]) -> list[dict]:
    """Per graded function: its test cells (hidden ones by name) and the mistakes of its visible cells, the
    most common first."""
    names = list(dict.fromkeys(f for c in cells for f in c["functions"]))
    out = []
    for name in names:
        mine = [c for c in cells if name in c["functions"]]
        mistakes = sorted((dict(m, cell=c["grade_id"]) for c in mine if not c["hidden"] for m in c["mistakes"]),
                          key=lambda m: (-m["count"], m["message"]))
        out.append({"name": name, "cells": [c["grade_id"] for c in mine], "mistakes": mistakes})
    return out


def _problems(rows: list) -> list[dict]:
    """Rows not cleanly graded, grouped by their status with its details taken out, the largest group first."""
    groups: dict[str, list] = {}
    for r in rows:
        if r.status != "graded" or r.score is None:
            groups.setdefault(status_key(r.status), []).append(r)
    out = [{"status": Counter(r.status for r in g).most_common(1)[0][0], "count": len(g),
            "students": sorted(r.student for r in g),
            "graded": g[0].score is not None and g[0].status.startswith("graded")}
           for g in groups.values()]
    return sorted(out, key=lambda p: (-p["count"], p["status"]))


def status_key(status: str) -> str:
    """A status without its details (file names, cell numbers, what a kernel said in parentheses)."""
    key = re.sub(r"\S+\.ipynb\b", "…", status)
    for _ in range(5):
        key = re.sub(r"\([^()]*\)", "(…)", key)
    return mistake_key(key)


def time_limit_hit(row) -> str | None:
    """'notebook' when the notebook's time limit stopped it, 'cell' when a cell ran out of time, else None."""
    if "stopped after" in row.status:
        return "notebook"
    if any("CellTimeoutError" in m or "ran longer than" in m for m in (row.messages or {}).values()) or (
            "CellTimeoutError" in row.message):
        return "cell"
    return None


def _renamed(row, name: str):
    row = copy.copy(row)
    row.student = name
    return row


def _student(row, feedback: Path | None, base: Path | None, page_name: str | None = None) -> dict:
    page = Path(feedback) / (page_name or f"{row.student}.html") if feedback else None
    link = None
    if page is not None and page.is_file():
        link = quote(Path(os.path.relpath(page.resolve(), Path(base or Path.cwd()).resolve())).as_posix())
    return {"student": row.student, "score": row.score, "max_score": row.max_score, "status": row.status,
            "seconds": row.seconds, "time_limit": time_limit_hit(row), "feedback": link,
            "cells": {g: s for g, (s, _) in row.cells.items()}}


def write_report(rows: list, path: Path, assignment: str, feedback: Path | None = None, limits=None,
                 csv_path: Path | None = None, tests: list | None = None, root: Path | None = None) -> dict:
    """Write `path` (the HTML page) and the same data as JSON beside it (`path` with .json); return the data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tests = tests if tests is not None else source_tests(assignment, root)
    data = build(rows, assignment, tests, feedback, path.parent, limits, csv_path)
    data["html"] = path.name
    _write(path.with_suffix(".json"), json.dumps(data, indent=1, ensure_ascii=False))
    _write(path, render(data))
    return data


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --- HTML -------------------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; } td, th { border-bottom: 1px solid #ddd;
padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; } th { background: #f4f4f4; }
.num { text-align: right; font-variant-numeric: tabular-nums; } .msg { white-space: pre-wrap; max-width: 48rem; }
.hidden { color: #666; font-style: italic; } .warn { color: #a40000; } small { color: #555; }
.bar { display: inline-block; height: 0.7rem; background: #4a7; vertical-align: middle; }
"""


def esc(value) -> str:
    """Anything shown on a page, student-derived text above all, escaped (quotes too: it may sit in an attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"  # no request for a favicon either
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _png(fig) -> str:
    """A matplotlib figure as an <img> with the PNG inline (a data: URL: the page makes no request)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(width: float = 6.5, height: float = 2.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def histogram(scores: list[float], max_score: float) -> str:
    """The score distribution: one bar per point when there are few points, else 20 bars."""
    fig, ax = _figure()
    if max_score <= 40:
        bins = [x - 0.5 for x in range(int(max_score) + 2)]
    else:
        bins = [max_score * i / 20 for i in range(21)]
    ax.hist(scores, bins=bins, color="#4a7", edgecolor="white")
    ax.set_xlabel(f"score (out of {max_score:g})")
    ax.set_ylabel("students")
    ax.set_xlim(-0.5 if max_score <= 40 else 0, max_score + (0.5 if max_score <= 40 else 0))
    return _png(fig)


def _time_plot(students: list[dict], limit: float | None) -> str:
    seconds = [s["seconds"] for s in students if s["seconds"] is not None]
    if not seconds:
        return ""
    fig, ax = _figure(6.5, 2.4)
    top = max([*seconds, limit or 0]) * 1.02 or 1.0
    ax.hist(seconds, bins=[top * i / 40 for i in range(41)], color="#58a", edgecolor="white")
    if limit:
        ax.axvline(limit, color="#a00", linestyle="--", label=f"notebook limit ({limit:g} s)")
        ax.legend()
    ax.set_xlabel("seconds the notebook took to grade")
    ax.set_ylabel("students")
    return _png(fig)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _bar(x: float | None) -> str:
    return "" if x is None else f'<span class="bar" style="width:{6 * x:.2f}rem"></span> '


def render(data: dict) -> str:
    """The report's HTML page from its data: every value from a student passes through `esc`."""
    s, title = data["summary"], f"{data['assignment']}: class report"
    body = [f"<h1>{esc(title)}</h1>",
            f"<p><small>{esc(data['generated'])}; grades in {esc(data['csv'] or 'the grading run')}</small></p>",
            "<h2>Scores</h2>", _summary_text(s, data["max_score"])]
    if data["scores"]:
        body.append(histogram(data["scores"], data["max_score"]))
    body += _problems_html(data["problems"]) + _functions_html(data["functions"], data["cells"])
    body += _cells_html(data["cells"]) + _students_html(data)
    return _page(title, body)


def _summary_text(s: dict, max_score: float) -> str:
    mean = "—" if s["mean"] is None else f"{s['mean']:.2f}"
    median = "—" if s["median"] is None else f"{s['median']:g}"
    return (f"<p>{s['students']} students: <b>{s['graded']} graded</b>, mean <b>{mean}</b>, median <b>{median}</b> "
            f"out of {max_score:g}; <b>{s['not_graded']} not graded</b>; "
            f"{s['students'] - s['clean']} need a look (status other than <code>graded</code>).</p>")


def _problems_html(problems: list[dict]) -> list[str]:
    if not problems:
        return ["<h2>Not graded, or graded with a note</h2><p>None: every notebook was graded cleanly.</p>"]
    out = ["<h2>Not graded, or graded with a note</h2>",
           "<table><tr><th>students</th><th>status</th><th>who</th></tr>"]
    for p in problems:
        kind = "graded with a note" if p["graded"] else "not graded"
        out.append(f'<tr><td class="num">{p["count"]}</td><td class="msg"><small>{kind}:</small> {esc(p["status"])}'
                   f'</td><td>{esc(", ".join(p["students"]))}</td></tr>')
    return out + ["</table>"]


def _functions_html(functions: list[dict], cells: list[dict]) -> list[str]:
    if not functions:
        return []
    rate = {c["grade_id"]: c["pass_rate"] for c in cells}
    out = ["<h2>Per graded function: the most common mistake first</h2>",
           "<table><tr><th>function</th><th>tests passed</th><th>most common mistakes</th></tr>"]
    for f in functions:
        tests = "<br>".join(f'{esc(g)}: {_pct(rate[g])}' for g in f["cells"])
        top = "<br>".join(f'<b>{m["count"]}</b> × {esc(_cut(m["message"], 220))}' for m in f["mistakes"][:3])
        out.append(f'<tr><td><code>{esc(f["name"])}</code></td><td>{tests}</td>'
                   f'<td class="msg">{top or "none"}</td></tr>')
    return out + ["</table>"]


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _cells_html(cells: list[dict]) -> list[str]:
    out = ["<h2>Per test cell</h2>"]
    for c in cells:
        head = (f'<h3 id="{esc(c["grade_id"])}">{esc(c["grade_id"])} <small>({c["points"]:g} points'
                f'{", hidden tests" if c["hidden"] else ""})</small></h3>')
        rate = (f'<p>{_bar(c["pass_rate"])}passed by {c["passed"]} of {c["students"]} graded students '
                f'({_pct(c["pass_rate"])})</p>')
        out += [head, rate]
        if c["hidden"]:
            out.append('<p class="hidden">Hidden tests: only the pass rate is shown.</p>')
        elif c["mistakes"]:
            out.append("<table><tr><th>students</th><th>mistake (the message most of them got)</th><th>who</th></tr>")
            out += [f'<tr><td class="num">{m["count"]}</td><td class="msg">{esc(m["message"])}</td>'
                    f'<td>{esc(", ".join(m["students"]))}</td></tr>' for m in c["mistakes"]]
            out.append("</table>")
    return out


def _students_html(data: dict) -> list[str]:
    limits = data["limits"] or {}
    hits = Counter(s["time_limit"] for s in data["students"])
    out = ["<h2>Students</h2>", f'<p>{hits["notebook"]} hit the notebook\'s time limit, {hits["cell"]} a cell\'s '
           "(their tests after that point score 0).</p>", _time_plot(data["students"], limits.get("student_timeout")),
           "<table><tr><th>student</th><th>score</th><th>seconds</th><th>time limit</th><th>status</th>"
           "<th>feedback</th></tr>"]
    slow = sorted(data["students"], key=lambda s: -(s["seconds"] or 0))
    for s in slow:
        score = "—" if s["score"] is None else f'{s["score"]:g} / {s["max_score"]:g}'
        secs = "—" if s["seconds"] is None else f'{s["seconds"]:.1f}'
        hit = {"notebook": f'the notebook\'s ({limits.get("student_timeout", "?")} s)',
               "cell": f'a cell\'s ({limits.get("cell_timeout", "?")} s)'}.get(s["time_limit"], "")
        link = f'<a href="{esc(s["feedback"])}">feedback</a>' if s["feedback"] else "—"
        out.append(f'<tr><td>{esc(s["student"])}</td><td class="num">{score}</td><td class="num">{secs}</td>'
                   f'<td class="warn">{esc(hit)}</td><td class="msg"><small>{esc(s["status"])}</small></td>'
                   f'<td>{link}</td></tr>')
    return out + ["</table><p><small>Sorted by the time each notebook took to grade, slowest first.</small></p>"]


# --- a whole term -----------------------------------------------------------------------------------------

def read_grades(path: Path) -> list[dict]:
    """A grades CSV as dicts: score None when empty (not graded), numbers as floats."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {"student", "assignment", "score", "max_score", "status"} - set(rows[0] if rows else {})
    if rows and missing:
        raise SystemExit(f"{path} is not a grades CSV of `llmcourse grade`: no column {', '.join(sorted(missing))}")
    for r in rows:
        r["score"] = float(r["score"]) if r["score"] not in ("", None) else None
        r["max_score"] = float(r["max_score"] or 0)
    return rows


def report_beside(path: Path) -> dict | None:
    """The JSON of the report made from this CSV (`--report`), if one lies in the same folder."""
    for candidate in sorted(Path(path).parent.glob("*.json")):
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == KIND and data.get("csv") == Path(path).name:
            data["_path"] = candidate
            return data
    return None


def build_term(paths: list[Path], base: Path | None = None) -> dict:
    """The term's data from grades CSVs: per assignment its class numbers (and its report, when found),
    per student each assignment's score as a fraction of the points and the trend across the term."""
    assignments: dict[str, dict] = {}
    for path in paths:
        rows = read_grades(path)
        if not rows:
            raise SystemExit(f"{path} has no students")
        name = rows[0]["assignment"]
        if name in assignments:
            raise SystemExit(f"two CSVs for {name}: {assignments[name]['csv']} and {path}")
        assignments[name] = _term_assignment(name, Path(path), rows, report_beside(Path(path)), base)
    order = sorted(assignments)
    students = sorted({s for a in assignments.values() for s in [*a["scores"], *a["not_graded"]]})
    table = [{"student": s, "scores": {a: assignments[a]["scores"].get(s) for a in order}} for s in students]
    for t in table:
        t["trend"] = trend([t["scores"][a] for a in order])
    return {"kind": "llmcourse term report", "format": FORMAT, "assignments": [assignments[a] for a in order],
            "students": table, "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _term_assignment(name: str, path: Path, rows: list[dict], data: dict | None, base: Path | None) -> dict:
    """One assignment's column of the term page: the fraction of points of every graded student."""
    graded = {r["student"]: r["score"] / r["max_score"] for r in rows
              if r["score"] is not None and r["status"].startswith("graded") and r["max_score"] > 0}
    out = {"assignment": name, "csv": str(path), "students": len(rows), "graded": len(graded),
           "not_graded": sorted(r["student"] for r in rows if r["student"] not in graded),
           "mean": statistics.fmean(graded.values()) if graded else None,
           "median": statistics.median(graded.values()) if graded else None,
           "scores": graded, "report": None, "top_mistake": None}
    if data:
        page = data["_path"].with_name(data.get("html") or data["_path"].with_suffix(".html").name)
        out["report"] = quote(Path(os.path.relpath(page.resolve(), Path(base or Path.cwd()).resolve())).as_posix())
        mistakes = [dict(m, function=f["name"]) for f in data.get("functions", []) for m in f["mistakes"]]
        if mistakes:
            top = max(mistakes, key=lambda m: m["count"])
            out["top_mistake"] = {"function": top["function"], "message": top["message"], "count": top["count"]}
    return out


def trend(fractions: list[float | None]) -> float | None:
    """The least-squares slope of a student's fractions of points over the assignments they were graded in,
    in fraction per assignment (+0.05: five points out of a hundred better each assignment); None under two."""
    points = [(i, y) for i, y in enumerate(fractions) if y is not None]
    if len(points) < 2:
        return None
    mx = statistics.fmean(i for i, _ in points)
    my = statistics.fmean(y for _, y in points)
    return sum((i - mx) * (y - my) for i, y in points) / sum((i - mx) ** 2 for i, _ in points)


def render_term(data: dict) -> str:
    """The term page: the class per assignment (with a plot), then one row per student with their trend."""
    names = [a["assignment"] for a in data["assignments"]]
    body = ["<h1>The term: every assignment, every student</h1>",
            f"<p><small>{esc(data['generated'])}; {len(names)} assignments, {len(data['students'])} students; "
            "scores are percentages of the points, mean and median over the graded notebooks.</small></p>",
            _term_plot(data), "<h2>Per assignment</h2>",
            "<table><tr><th>assignment</th><th>graded</th><th>not graded</th><th class=\"num\">mean</th>"
            "<th class=\"num\">median</th><th>most common mistake</th></tr>"]
    for a in data["assignments"]:
        title = f'<a href="{esc(a["report"])}">{esc(a["assignment"])}</a>' if a["report"] else esc(a["assignment"])
        top = a["top_mistake"]
        mistake = (f'<code>{esc(top["function"])}</code>: <b>{top["count"]}</b> × {esc(_cut(top["message"], 200))}'
                   if top else "<small>(no report JSON beside the CSV)</small>" if not a["report"] else "none")
        body.append(f'<tr><td>{title}</td><td class="num">{a["graded"]} / {a["students"]}</td>'
                    f'<td>{esc(", ".join(a["not_graded"]))}</td><td class="num">{_pct(a["mean"])}</td>'
                    f'<td class="num">{_pct(a["median"])}</td><td class="msg">{mistake}</td></tr>')
    body += ["</table>", "<h2>Per student</h2>", "<table><tr><th>student</th>"
             + "".join(f"<th class=\"num\">{esc(n)}</th>" for n in names) + "<th>trend</th></tr>"]
    for s in data["students"]:
        cells = "".join(f'<td class="num">{_pct(s["scores"][n])}</td>' for n in names)
        body.append(f'<tr><td>{esc(s["student"])}</td>{cells}<td>{_trend_text(s["trend"])}</td></tr>')
    body.append("</table><p><small>— : not graded, or not handed in. Trend: the slope of a straight line through "
                "the student's percentages, in percentage points per assignment.</small></p>")
    return _page("The term", body)


def _trend_text(slope: float | None) -> str:
    if slope is None:
        return "—"
    arrow = "↗" if slope > 0.02 else "↘" if slope < -0.02 else "→"
    return f"{arrow} {100 * slope:+.0f} points / assignment"


def _term_plot(data: dict) -> str:
    """Each student's percentage per assignment (thin grey lines) and the class mean and median."""
    names = [a["assignment"] for a in data["assignments"]]
    if not names:
        return ""
    fig, ax = _figure(7, 3)
    for s in data["students"]:
        ax.plot(range(len(names)), [100 * v if v is not None else float("nan") for v in s["scores"].values()],
                color="#bbb", linewidth=0.8, marker=".")
    for key, style in (("mean", "-"), ("median", "--")):
        ax.plot(range(len(names)), [100 * a[key] if a[key] is not None else float("nan") for a in data["assignments"]],
                style, color="#185", linewidth=2, label=f"class {key}")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylim(-5, 105)
    ax.set_ylabel("% of the points")
    ax.legend()
    return _png(fig)


def write_term(paths: list[Path], out: Path) -> dict:
    """Write the term page `out` and its data as JSON beside it; return the data."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = build_term([Path(p) for p in paths], out.parent)
    _write(out.with_suffix(".json"), json.dumps(data, indent=1, ensure_ascii=False))
    _write(out, render_term(data))
    return data


# --- the command line -------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csvs", nargs="+", type=Path, help="grades CSVs, one per assignment (e.g. grades-*.csv)")
    parser.add_argument("--out", type=Path, default=Path("term.html"), help="the page to write (default: term.html; "
                        "its data goes beside it as .json)")


def run(args: argparse.Namespace) -> int:
    """`llmcourse report`: write the term page."""
    missing = [str(p) for p in args.csvs if not p.is_file()]
    if missing:
        print(f"llmcourse report: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    data = write_term(args.csvs, args.out)
    found = sum(a["report"] is not None for a in data["assignments"])
    print(f"wrote {args.out} ({len(data['assignments'])} assignments, {len(data['students'])} students; "
          f"{found} with their report's JSON)")
    return 0
