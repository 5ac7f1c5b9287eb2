"""Grading generated programs by running them on test cases (LiveCodeBench), one subprocess per test.

The gold answer is a JSON test specification (built by `attncore.data` for LiveCodeBench):
`{"fn_name": name or null, "tests": [{"input": str, "output": str, "testtype": "stdin" | "functional"}]}`.

- `stdin` tests feed `input` to the program and compare its standard output with `output` token by
  token, line by line (surrounding whitespace ignored; tokens that are both numbers compare by value,
  so `2.50` equals `2.5`).
- `functional` tests (LeetCode style) call `Solution().<fn_name>(*args)`, the arguments being the JSON
  values on the lines of `input`, and compare the JSON form of the result with `output`.

Every test runs in a fresh Python process under a wall-clock limit and a CPU-time limit (the kernel
ends a busy loop even if its grader was killed first) and a memory limit. This isolates crashes and
runaway programs; it is not a security sandbox: run untrusted models' code on a disposable machine.
A response passes when all its tests pass; the first failure stops its grading.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
from collections import deque
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from attncore.errors import UserError

TEST_TIMEOUT_S = 6.0
MEMORY_LIMIT_BYTES = 4 << 30

_CODE_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)

# Imports competitive-programming solutions often assume (LeetCode's environment provides them).
_PRELUDE = """\
import sys, math, collections, heapq, bisect, itertools, functools, string, re, random
from collections import *
from itertools import *
from functools import *
from heapq import *
from bisect import *
from math import *
from typing import *
sys.setrecursionlimit(1 << 16)
"""

_CALL = """
import json as _json
_args = [_json.loads(_line) for _line in sys.stdin.read().splitlines() if _line.strip()]
_result = Solution().{fn_name}(*_args)
print(_json.dumps(_result))
"""


def extract_code(text: str) -> str | None:
    """The last fenced code block (```python ... ``` or a bare ``` block); None when there is none."""
    blocks = deque(_CODE_BLOCK.finditer(text), maxlen=1)
    return blocks[0].group(1) if blocks else None


def parse_test_spec(gold: str) -> tuple[str | None, list[dict[str, str]]]:
    """`(fn_name, tests)` of a gold test specification; a UserError when it is not one."""
    try:
        spec = json.loads(gold)
        tests = spec["tests"]
        fn_name = spec.get("fn_name")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise UserError("code grading needs a JSON test specification as the gold answer") from None
    if not tests:
        raise UserError("code grading needs at least one test case in the gold answer")
    if any(t.get("testtype") == "functional" for t in tests) and not fn_name:
        raise UserError("functional test cases need `fn_name` in the gold answer")
    return fn_name, tests


def _limit_resources(cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def run_program(path: Path, stdin: str, timeout_s: float) -> str | None:
    """Standard output of `python path` fed `stdin`; None when it fails, times out or crashes."""
    cpu = math.ceil(timeout_s) + 1
    try:
        done = subprocess.run(
            [sys.executable, "-I", str(path)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=path.parent,
            preexec_fn=lambda: _limit_resources(cpu),
            env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
        )
    except (subprocess.TimeoutExpired, UnicodeDecodeError):
        return None
    return done.stdout if done.returncode == 0 else None


def _same_token(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def same_stdout(actual: str, expected: str) -> bool:
    """Outputs equal line by line and token by token, ignoring surrounding whitespace."""
    got = [line.split() for line in actual.strip().splitlines()]
    want = [line.split() for line in expected.strip().splitlines()]
    if len(got) != len(want):
        return False
    return all(
        len(g) == len(w) and all(_same_token(x, y) for x, y in zip(g, w, strict=True))
        for g, w in zip(got, want, strict=True)
    )


def _same_json(actual: str, expected: str) -> bool:
    try:
        got: Any = json.loads(actual.strip().splitlines()[-1])
        want: Any = json.loads(expected)
    except (json.JSONDecodeError, IndexError):
        return False
    return got == want


def passes_tests(code: str, gold: str, timeout_s: float = TEST_TIMEOUT_S) -> bool:
    """True when `code` passes every test of the gold specification."""
    fn_name, tests = parse_test_spec(gold)
    with tempfile.TemporaryDirectory(prefix="attncore-code-") as folder:
        stdin_program = Path(folder) / "solution.py"
        stdin_program.write_text(_PRELUDE + code)
        call_program = Path(folder) / "call.py"
        if fn_name:
            call_program.write_text(_PRELUDE + code + _CALL.format(fn_name=fn_name))
        for test in tests:
            functional = test.get("testtype") == "functional"
            output = run_program(call_program if functional else stdin_program, test["input"], timeout_s)
            if output is None:
                return False
            same = _same_json if functional else same_stdout
            if not same(output, test["output"]):
                return False
    return True
