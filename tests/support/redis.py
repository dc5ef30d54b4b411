"""A throwaway redis-server for the Redis job-queue tests (Debian: apt-get install redis-server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest


def require_redis() -> str:
    """The redis-server binary; skips the test without one, or fails if ISV_TEST_REQUIRE_REDIS=1."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("ISV_TEST_REQUIRE_REDIS") == "1":
            pytest.fail("ISV_TEST_REQUIRE_REDIS=1 but redis-server is not on PATH")
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    return binary


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, without persistence, for the block; a context manager."""

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = base_dir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        binary = require_redis()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log = (self.base_dir / "redis.log").open("ab")
        flags = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, *flags, "--dir", str(self.base_dir)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"redis-server did not start: {(self.base_dir / 'redis.log').read_text()[-500:]}")

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
