"""sbibm-style benchmark tasks (PyMC priors, JAX simulators, reference posteriors)."""

from pymc_sbi.benchmarks.tasks import TASKS, Task, get_task, linear_gaussian, slcp, two_moons

__all__ = ["TASKS", "Task", "get_task", "linear_gaussian", "slcp", "two_moons"]
