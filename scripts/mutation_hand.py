"""Hand mutants of what mutmut does not mutate (properties, class attributes, module constants).

Run from the project root: `.venv/bin/python scripts/mutation_hand.py`. Each mutant is one textual
change to a copy of the package in .mutation/hand/ (ignored by git); the tests named with it run on
SQLite and must fail. Prints one line per mutant: killed or SURVIVED.
"""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation" / "hand"
U = "tests/unit/marketplaces/koogallery_kit/test_kit_signing.py"
F = "tests/unit/test_freshness.py"
CS = "tests/unit/marketplaces/koogallery_kit/test_kit_client_secret.py"
M = [
    (
        "isvserver/freshness.py",
        "{Verdict.MISSING_SIGNATURE, Verdict.NO_KEY, Verdict.BAD_SIGNATURE, Verdict.REPLAYED_NONCE}",
        "{Verdict.MISSING_SIGNATURE, Verdict.NO_KEY, Verdict.BAD_SIGNATURE}",
        [U, "tests/unit/test_freshness.py", "tests/integration/test_junk_storage.py"],
    ),
    (
        "isvserver/freshness.py",
        "{Verdict.MISSING_SIGNATURE, Verdict.NO_KEY, Verdict.BAD_SIGNATURE, Verdict.REPLAYED_NONCE}",
        "{Verdict.NO_KEY, Verdict.BAD_SIGNATURE, Verdict.REPLAYED_NONCE}",
        [U],
    ),
    (
        "isvserver/freshness.py",
        "MAX_NONCE_LENGTH = 128",
        "MAX_NONCE_LENGTH = 129",
        [U, "tests/integration/marketplaces/koogallery/test_request_auth.py"],
    ),
    (
        "isvserver/freshness.py",
        "MAX_NONCE_LENGTH = 128",
        "MAX_NONCE_LENGTH = 127",
        [U, "tests/integration/marketplaces/koogallery/test_fuzz_properties.py"],
    ),
    (
        "isvserver/freshness.py",
        "        return self.verdict == Verdict.VERIFIED\n",
        "        return self.verdict != Verdict.VERIFIED\n",
        [U, F],
    ),
    (
        "isvserver/freshness.py",
        "return auth_failed if self.verdict in AUTH_FAILURES else invalid",
        "return invalid if self.verdict in AUTH_FAILURES else auth_failed",
        [U],
    ),
    (
        "isvserver/freshness.py",
        "        if self.verdict == Verdict.VERIFIED:\n            return success",
        "        if self.verdict != Verdict.VERIFIED:\n            return success",
        [U],
    ),
    ("isvserver/body_sign.py", "{44}", "{43,44}", ["tests/unit/test_body_sign.py"]),
    ("isvserver/body_sign.py", "{44}", "{44,}", ["tests/unit/test_body_sign.py"]),
    (
        "isvserver/body_sign.py",
        'sign_type="HMAC-SHA256", signature="([A',
        'sign_type="HMAC-SHA256",\\s*signature="([A',
        ["tests/unit/test_body_sign.py"],
    ),
    ("isvserver/marketplaces/koogallery_kit/signing.py", "[0-9A-Fa-f]{64}", "[0-9A-Fa-f]{63,64}", [U]),
    ("isvserver/marketplaces/koogallery_kit/signing.py", "[0-9A-Fa-f]{64}", "[0-9a-f]{64}", [U]),
    (
        "isvserver/marketplaces/koogallery_kit/signing.py",
        'Verdict.STALE_TIMESTAMP: "x-timestamp is outside',
        'Verdict.STALE_TIMESTAMP: "x-timestamp is not within',
        [U, "tests/integration/marketplaces/koogallery_kit/test_kit_endpoints.py"],
    ),
    ("isvserver/calls.py", "MAX_DEPTH = 32", "MAX_DEPTH = 33", ["tests/unit/test_call_json.py"]),
    (
        "isvserver/calls.py",
        "        return self.verdict == VERIFIED\n",
        "        return self.verdict != VERIFIED\n",
        ["tests/integration/test_call_pipeline.py"],
    ),
    ("isvserver/marketplaces/koogallery_kit/client_secret.py", "MIN_BITS = 3072", "MIN_BITS = 2048", [CS]),
    (
        "isvserver/marketplaces/koogallery_kit/client_secret.py",
        '    ("sha1-mgf1sha1", _oaep(hashes.SHA1(), hashes.SHA1())),  # noqa: S303\n',
        "",
        [CS],
    ),
    (
        "isvserver/marketplaces/koogallery_kit/client_secret.py",
        '    ("sha256-mgf1sha256", _oaep(hashes.SHA256(), hashes.SHA256())),\n',
        "",
        [CS],
    ),
    (
        "isvserver/marketplaces/koogallery_kit/client_secret.py",
        'WHITESPACE = re.compile(rb"\\s+")',
        'WHITESPACE = re.compile(rb" ")',
        [CS],
    ),
    (
        "isvserver/marketplaces/koogallery_kit/events.py",
        '"allOrgSync": ORGS,',
        '"allOrgSync": USERS,',
        ["tests/integration/marketplaces/koogallery_kit/test_kit_events.py"],
    ),
    (
        "isvserver/marketplaces/koogallery_kit/store.py",
        "CHUNK = 500",
        "CHUNK = 1000",
        ["tests/integration/marketplaces/koogallery_kit/test_kit_store.py"],
    ),
    ("isvserver/jobs/retention.py", "BATCH = 5000", "BATCH = 5001", ["tests/integration/test_retention.py"]),
]


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    files = subprocess.run(
        ["git", "ls-files", "isvserver", "tests", "setup.cfg", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        (WORK / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, WORK / name)
    for path, old, new, tests in M:
        p = WORK / path
        text = p.read_text()
        assert old in text, (path, old)
        p.write_text(text.replace(old, new, 1))
        try:
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                "not postgres",
            ]
            result = subprocess.run([*command, *tests], cwd=WORK, capture_output=True, text=True, timeout=900)
            verdict = "killed" if result.returncode != 0 else "SURVIVED"
        finally:
            p.write_text(text)
        print(f"{verdict}: {path}: {old[:60]!r} -> {new[:60]!r}", flush=True)


if __name__ == "__main__":
    main()
