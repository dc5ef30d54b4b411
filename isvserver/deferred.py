"""Work that must wait until the current call's transaction has committed (queueing jobs, waiting)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Step = Callable[[], Any]
_steps: ContextVar[list[Step] | None] = ContextVar("isvserver_after_commit", default=None)


@contextmanager
def collecting() -> Iterator[list[Step]]:
    """Collect the steps deferred inside the block; the caller runs them once it has committed."""
    steps: list[Step] = []
    token = _steps.set(steps)
    try:
        yield steps
    finally:
        _steps.reset(token)


def after_commit(step: Step) -> None:
    """Run `step` after the surrounding call's commit; outside a call (no collector), at once."""
    steps = _steps.get()
    if steps is None:
        step()
    else:
        steps.append(step)
