"""What a running app holds: its settings, its provisioner and its clock (no business state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

from isvserver.provisioning import Provisioner
from isvserver.settings import Settings

if TYPE_CHECKING:
    from isvserver.jobs import Jobs
    from isvserver.lifecycle import Lifecycle


def wall_clock_ms() -> float:
    """UNIX time in milliseconds."""
    return time.time() * 1000


@dataclass(frozen=True)
class Runtime:
    """The app's collaborators, injected by create_app (tests pass a fixed clock)."""

    settings: Settings
    provisioner: Provisioner
    jobs: Jobs
    lifecycle: Lifecycle  # the lifecycle's commands, bound to the provisioner and the jobs
    clock: Callable[[], float] = wall_clock_ms


def runtime() -> Runtime:
    """The Runtime of the current app."""
    return current_app.extensions["isvserver"]
