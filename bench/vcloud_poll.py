"""How fast the V Cloud poller follows orders: one sweep over N new paid orders, then one over the same N
(nothing changes), in-process against the local platform (tests/support/vcloud_platform.py).

    .venv/bin/python bench/vcloud_poll.py [--orders 1000] [--page-size 50]

SQLite in a temp dir, the template provisioner (inline). Prints orders per second for the first sweep
(each order: its row, a creation, provisioning, the expiry) and for the second (each order read again).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from isvserver import create_app, db  # noqa: E402
from isvserver.marketplaces.vcloud import poller  # noqa: E402
from isvserver.migrations import migrate  # noqa: E402
from isvserver.settings import load_settings  # noqa: E402

from support.harness import base_env  # noqa: E402
from support.vcloud_platform import VCloudPlatform, vcloud_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        url = f"sqlite:///{tmp / 'isvserver.sqlite3'}"
        database = db.make_database(url)
        migrate(database)
        db.close_all(database)
        with VCloudPlatform(tmp / "platform.sqlite3") as platform:
            for _ in range(args.orders):
                platform.add_order()
            env = base_env(tmp, url, **vcloud_env(platform, ISV_VCLOUD_PAGE_SIZE=str(args.page_size)))
            jobs = create_app(load_settings(env)).extensions["isvserver"].jobs
            for label in ("new orders", "the same orders again"):
                started = time.perf_counter()
                with jobs.context() as rt:
                    read = poller.poll(rt)
                elapsed = time.perf_counter() - started
                print(f"{label:>24}: {read} orders in {elapsed:.2f} s = {read / elapsed:,.0f} orders/s")
        db.close_all()


if __name__ == "__main__":
    main()
