"""The instructor's half of llmcourse: release exercises, grade submissions, and what grading needs.

One module per verb: `course` (where things are, nbgrader settings), `release`, `autograde` (`llmcourse
grade`), `judge` (the trusted comparison outside the kernel), `sandbox` (the student's kernel), `stubs`
(llmcourse with the graded functions stubbed), `feedback`. The checks that test cells call live beside it
in `llmcourse.checks`.

Explained in: README.md, sections "Authors", "Instructors: grading" and "How grading works".
"""
from llmcourse.grading.course import CSV_COLUMNS, REPO, assignments, configure  # noqa: F401
from llmcourse.grading.release import release  # noqa: F401
from llmcourse.grading.autograde import (UID_BASE, GradingEnvironmentError, Limits, Row, grade,  # noqa: F401
                                         restore_locked_cells, summary, write_csv)
