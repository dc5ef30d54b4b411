"""The settings file: `NAME=value` lines every command, the app and gunicorn read after the environment.

Its path is ISV_SETTINGS_FILE, else `isvserver.env` in the working directory when it exists; an empty
ISV_SETTINGS_FILE reads no file. A variable set in the environment (as NAME or NAME_FILE) wins over the
file's NAME and NAME_FILE; an empty value in the file is no value. Parsed by python-dotenv, without
`${…}` interpolation (a value is taken as written). This module imports nothing of isvserver: the
shipped gunicorn configuration loads it by path, before anything imports the package.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from dotenv.parser import parse_stream

VARIABLE = "ISV_SETTINGS_FILE"
DEFAULT = "isvserver.env"  # in the working directory


class SettingsFileError(Exception):
    """The settings file cannot be read or holds a line that is not NAME=value (never a value)."""


def path(environ: Mapping[str, str]) -> Path | None:
    """The settings file to read: ISV_SETTINGS_FILE, else ./isvserver.env if it exists, else None."""
    named = environ.get(VARIABLE)
    if named is not None:
        return Path(named) if named.strip() else None
    default = Path(DEFAULT)
    return default if default.is_file() else None


def values(file: Path) -> dict[str, str]:
    """The NAME=value pairs of `file` that have a value."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsFileError(f"{VARIABLE}: cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsFileError(f"{VARIABLE}: {file} is not UTF-8 text") from None
    found: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise SettingsFileError(
                f"{VARIABLE}: line {binding.original.line} of {file} is not NAME=value "
                "(quote a value holding spaces or #)"
            )
        if binding.key and binding.value:
            found[binding.key] = binding.value
    return found


def _same_setting(name: str) -> tuple[str, str]:
    base = name.removesuffix("_FILE")
    return base, f"{base}_FILE"


def merged(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the settings file's values added where the environment sets neither NAME nor
    NAME_FILE."""
    result = dict(environ)
    file = path(environ)
    if file is None:
        return result
    for name, value in values(file).items():
        if name == VARIABLE or any(environ.get(n) for n in _same_setting(name)):
            continue
        result[name] = value
    return result


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Add the settings file's values to `environ` (os.environ by default): what processes started
    from here (gunicorn, its workers, the job consumer) then inherit."""
    target = os.environ if environ is None else environ
    for name, value in merged(target).items():
        if target.get(name) != value:
            target[name] = value
