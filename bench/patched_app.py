"""isvserver's app with the benchmark's simulated fixes (bench/patches.py, ISV_BENCH_PATCHES) applied.

Only for `bench/run.py --patch …`: gunicorn -c config/gunicorn.conf.py --pythonpath bench
'patched_app:create_app()'. Without ISV_BENCH_PATCHES it is exactly isvserver's create_app().
"""

from __future__ import annotations

from typing import Any

import patches


def create_app() -> Any:
    import isvserver

    names = patches.requested()
    patches.apply_before_app(names)
    app = isvserver.create_app()
    patches.apply_to_app(app, names)
    return app
