"""What runs in the grading kernel's process and in the worker process that drives it: `sandbox` (the kernel,
started inside its limits, namespaces and user id) and `worker` (nbgrader's autograde of one student at a time,
the test cells' cases staged as they run, the records the kernel writes).

Explained in: README.md, section "How grading works".
"""
