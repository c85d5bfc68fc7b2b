"""What students receive, and how it is made: `release` (the student notebooks, from the solutions), `stubs`
(llmcourse with the graded functions stubbed), `kit` (`llmcourse kit`: the stubbed package, the notebooks and
the `llmcourse check` command), `check` (`llmcourse check`), `replay` (the recorded reference results that let
the kit's checks run on stubs) and `chain` (the student's own functions, saved for the later notebooks).

Explained in: README.md, sections "Students" and "Instructors: the student kit".
"""
