"""The `attnpo` and `cotattn` entry points: real command groups with a version, and help when run bare."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["attnpo", "cotattn"])
def test_version_and_help(package):
    def run(*args: str) -> subprocess.CompletedProcess:
        code = f"from {package}.cli import main; main()"
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)

    version = run("--version")
    expected = f"{package} {importlib.import_module(package).__version__}"
    assert (version.returncode, version.stdout.strip()) == (0, expected)
    bare = run()
    assert bare.returncode == 0 and "Usage:" in bare.stdout
    unknown = run("no-such-command")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
