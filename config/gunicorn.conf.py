"""gunicorn settings for isvserver: the ones installed with the package, then your changes.

`isvserver serve` uses isvserver/web/gunicorn.conf.py (installed with the package) by itself. To
change a setting, pass this file, or a copy of it, to `isvserver serve --config FILE` (or to
`gunicorn -c FILE`) with your settings at the end. It runs the installed file rather than importing
isvserver: the gunicorn master must not import it (prometheus_client has to see the metrics folder
that the installed file sets before anything imports it).
"""

from importlib.util import find_spec
from pathlib import Path

_spec = find_spec("isvserver")  # finds the installed package without importing it
if _spec is None or _spec.origin is None:
    raise RuntimeError("isvserver is not installed in the Python that runs gunicorn")
_SHIPPED = Path(_spec.origin).parent / "web" / "gunicorn.conf.py"
exec(compile(_SHIPPED.read_text(encoding="utf-8"), str(_SHIPPED), "exec"))  # noqa: S102

# Your changes, e.g.:
# timeout = 60
