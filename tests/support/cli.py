"""isvserver's commands run in-process (click's CliRunner) with exactly the settings a test gives."""

from __future__ import annotations

import os
from typing import Any

from click.testing import CliRunner, Result

from isvserver import db


def invoke_cli(env: dict[str, str], command: Any, *args: str, input: str | None = None) -> Result:
    """`command ARGS` with exactly `env` as its ISV_* settings; the test's database binding is put back.

    CliRunner only overlays `env` on os.environ, so inherited ISV_* variables are removed explicitly;
    the command binds the shared database proxy, so the test's binding is restored afterwards.
    """
    isolated: dict[str, str | None] = {name: None for name in os.environ if name.startswith("ISV_")}
    isolated.update(env)
    previous = db.database.obj
    try:
        return CliRunner().invoke(command, list(args), env=isolated, input=input, catch_exceptions=False)
    finally:
        if previous is not None:
            db.database.initialize(previous)
