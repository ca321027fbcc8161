"""``persd pool build``: a file of instruction + signature + reference rows (the paper's Code
Alpaca tasks, or any file of that kind) turned into a task pool a run can use, with tests the
teacher's inputs and the reference's outputs make (docs/TASKS.md, "Building a pool")."""

from persd.poolbuild.build import BuildReport, build_pool

__all__ = ["BuildReport", "build_pool"]
