"""Your functions from the earlier exercises, by the names the exercises give them.

`from llmcourse.yours import generate_greedy_cached` gives, in the student kit, your own function from exercise
05 once `llmcourse check` has passed that notebook (`llmcourse.grading.student.chain`); until then calling it says which
exercise to finish first. In the course's repository and when a notebook is graded it is llmcourse's own
implementation, so that one weak exercise never costs points in the next.

Explained in chapter 08_your_gpt and in README.md, section "Students".
"""
from __future__ import annotations

from typing import Callable


def __getattr__(name: str) -> Callable:
    from llmcourse import checks

    check = checks.REGISTRY.get(f"check_{name}")
    if check is None:
        raise AttributeError(f"no exercise asks for a function named {name!r}")
    return check.reference  # in the kit: a stub that runs your saved function
