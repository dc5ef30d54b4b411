"""The JDK as an independent implementation: one long-lived `java` checker process per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import strategies as st

# Any JSON value a marketplace body may hold, for the signature cross-checks.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


class JavaChecker:
    """A `java` process answering one command per line: arguments hex-encoded, numbers as they are."""

    def __init__(self, classes: Path, main_class: str, java_options: Sequence[str] = ()) -> None:
        self.main_class = main_class
        self.log = classes / "stderr.log"
        self._stderr = self.log.open("wb")
        self.process = subprocess.Popen(
            ["java", *java_options, "-cp", str(classes), main_class],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="ascii",
            bufsize=1,
        )

    def ask(self, command: str, *args: str | bytes | int) -> str:
        """The checker's one-line answer to `command` with `args`."""
        fields = [
            a.encode("utf-8").hex() if isinstance(a, str) else a.hex() if isinstance(a, bytes) else str(a)
            for a in args
        ]
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(" ".join([command, *fields]) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            pytest.fail(f"{self.main_class} died: {self.log.read_text(errors='replace')}")
        return answer.rstrip("\n")

    def close(self) -> None:
        """End the process (it exits when its input closes)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self._stderr.close()


def java_checker(
    tmp_path_factory: pytest.TempPathFactory, source: Path, java_options: Sequence[str] = ()
) -> Iterator[JavaChecker]:
    """Compile `source` and run it for the session (skip without a JDK; fail with ISV_TEST_REQUIRE_JDK=1)."""
    missing = [tool for tool in ("javac", "java") if shutil.which(tool) is None]
    if missing:
        reason = f"JDK cross-check needs {' and '.join(missing)} on PATH"
        if os.environ.get("ISV_TEST_REQUIRE_JDK") == "1":
            pytest.fail(f"{reason} (ISV_TEST_REQUIRE_JDK=1)")
        pytest.skip(reason)
    classes = tmp_path_factory.mktemp(source.stem.lower())
    compiled = subprocess.run(
        ["javac", "-encoding", "UTF-8", "-d", str(classes), str(source)], capture_output=True, text=True
    )
    assert compiled.returncode == 0, compiled.stderr
    checker = JavaChecker(classes, source.stem, java_options)
    yield checker
    checker.close()
