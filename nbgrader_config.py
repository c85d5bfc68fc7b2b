"""nbgrader settings of the course: source notebooks in solutions/, student notebooks in exercises/.

Run nbgrader (or `llmcourse release`) from the repository root. The settings themselves live in
`llmcourse.grading.course.configure`, shared with `llmcourse grade`.
"""
from pathlib import Path

from llmcourse.grading.course import configure

configure(get_config(), root=Path(__file__).resolve().parent)  # noqa: F821 (nbgrader provides get_config)
