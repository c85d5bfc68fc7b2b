"""The instructor's pipeline, `llmcourse grade`: `pipeline` (find the submissions, grade each with an executor,
write) and its executors `local` (this machine's worker pool) and `cluster` (a Dask cluster's workers); the
stages both run for each student: `submission`, `prepare`, `cache`, `canary`, `attempts` over `workers`, `judge`
(the trusted comparison outside the kernel), `feedback`, `rows`, `limits`; `report`, the class report.

Explained in: README.md, sections "Instructors: grading" and "How grading works".
"""
