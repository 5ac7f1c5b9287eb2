"""The `cotattn` entry point: a real command group with a version, and help when run bare."""

from __future__ import annotations

import subprocess
import sys

from cotattn import __version__


def run(*args: str) -> subprocess.CompletedProcess:
    code = "from cotattn.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_version_and_help():
    version = run("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"cotattn {__version__}")
    bare = run()
    assert bare.returncode == 0 and "Usage:" in bare.stdout
    unknown = run("no-such-command")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
