"""Tasks: questions with every valid answer, built-in offline ones, hub and file loaders, prompts and grading.

    from calib.tasks import load_task, grade
    task = load_task("capitals")
    grade(task.examples[0], "Canberra.")

Importing this package is cheap: country and element data are parsed on first use, `datasets` only when a hub
task is loaded.
"""

from calib.tasks import hub as _hub  # noqa: F401  (registers the hub loaders)
from calib.tasks import jsonl as _jsonl  # noqa: F401  (registers the file loaders)
from calib.tasks import suites as _suites  # noqa: F401  (registers the built-in tasks)
from calib.tasks.base import Example, Task, describe_tasks, list_tasks, load_task, register_task
from calib.tasks.grading import Grade, grade, grade_detail

__all__ = [
    "Example",
    "Grade",
    "Task",
    "describe_tasks",
    "grade",
    "grade_detail",
    "list_tasks",
    "load_task",
    "register_task",
]
