"""Tasks as one registered type, shared by the runtime and the packager, the way
precisions are (precision.py).

What a model's outputs are for decides how its artifacts are judged (figures, floors, the
search's error), what the parity checks compare, whether static int8 keeps a decode tail
float, and what `Model.predict` answers. Each of those is a question to the model's Task,
never a comparison of its name: adding a task is one module with its Task and one line in
the registration below (tasks/segment.py was added that way).
"""

from __future__ import annotations

from ..errors import UsageError
from ..typed import did_you_mean
from .base import Ask, Task
from .classify import Classify
from .detect import Detect
from .segment import Segment
from .vectors import Embed, Generic

__all__ = ["Ask", "Task", "TASKS", "register_task", "task", "answering", "answer_kinds"]

TASKS: dict[str, Task] = {}


def register_task(t: Task) -> Task:
    """Add a task (a later one of the same name replaces it)."""
    TASKS[t.name] = t
    return t


for _t in (Classify(), Detect(), Embed(), Segment(), Generic()):
    register_task(_t)


def task(name: str) -> Task:
    """The registered task called `name`."""
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r}; {did_you_mean(name, TASKS)}known: {', '.join(TASKS)}") from None


def answer_kinds() -> tuple[str, ...]:
    """Every postprocessing kind a registered task answers with."""
    return tuple(t.answer_kind for t in TASKS.values() if t.answer_kind is not None)


def answering(kind: str) -> Task:
    """The task whose answers are of postprocessing kind `kind`."""
    for t in TASKS.values():
        if t.answer_kind == kind:
            return t
    raise UsageError(f"no task answers with {kind!r}; known: {', '.join(answer_kinds())}")
