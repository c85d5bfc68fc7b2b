"""What one student's notebook may use while it is graded (CPU time per cell and per notebook, memory,
processes, files, scratch room): the sandbox (`llmcourse.grading.kernel.sandbox`) and the worker keep them.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

from dataclasses import dataclass

from llmcourse.grading.course import CELL_TIMEOUT


@dataclass
class Limits:
    """What one student's notebook may use while it is graded."""
    cell_timeout: int = CELL_TIMEOUT        # seconds of CPU time per cell, then the cell is interrupted
    student_timeout: int = 600              # seconds of CPU time for the whole notebook, then its grading stops
    # (and WALL_FACTOR times each in wall-clock time: a cell that sleeps or waits is stopped too)
    memory_bytes: int = 4 * 2**30           # address space of the kernel (and of each process it starts)
    max_processes: int = 64                 # processes the kernel may run at once
    max_file_bytes: int = 256 * 2**20       # largest file the kernel may write
    scratch_bytes: int = 512 * 2**20        # room in each of its working folder, /tmp, /var/tmp and /dev/shm (root)

    def described(self) -> str:
        return (f"memory {self.memory_bytes / 2**30:g} GiB, files {self.max_file_bytes // 2**20} MiB, "
                f"{self.max_processes} processes, {self.cell_timeout} s of CPU time a cell")
