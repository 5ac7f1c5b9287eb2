"""Grading in worker processes with a hard per-answer wall-clock timeout enforced by the parent.

math-verify's timeouts use SIGALRM, which only works in the main thread, and sympy can spend minutes on
an answer such as `9^{9^{9^{9}}}`. So every answer is graded in a worker process; when one takes longer
than `timeout_s` the parent kills that worker, reports the answer incorrect with reason `timeout` and
starts a replacement. A worker that dies (segfault, out of memory) costs only its current answer.

Workers are started from a forkserver that has already imported math-verify and sympy (about 2.5 s once
per parent process), so a replacement is ready in a fraction of a second and no worker inherits the parent's
threads or CUDA state. As with any forkserver or spawn multiprocessing, workers re-import the main script,
so a script that grades must keep its top-level code under `if __name__ == "__main__":`.

A `Grader` keeps its workers between calls; it is not safe to share across threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType

from attncore.errors import UserError
from attncore.grading.code import parse_test_spec
from attncore.grading.normalize import choice_gold, numeric_gold
from attncore.grading.result import GradeResult, GradingMode, Reason, as_mode

DEFAULT_WORKERS = 2
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_START_TIMEOUT_S = 120.0
_RULES_MODULE = "attncore.grading.rules"
_READY = "ready"
_CLOSE_GRACE_S = 1.0


def _serve(conn: Connection) -> None:
    """Worker loop: grade `(index, response, gold, mode)` tasks until the parent sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from attncore.grading import rules  # imported here: only workers load math-verify and sympy

    rules.warm_up()
    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        index, response, gold, mode = task
        try:
            result = rules.grade_response(response, gold, mode)
        except Exception:  # a grading bug or RecursionError must not take the worker down
            result = GradeResult(False, None, Reason.ERROR)
        conn.send((index, result))


@dataclass(eq=False)
class _Worker:
    """One worker process, its end of the pipe, and the answer it is grading with its deadline."""

    process: BaseProcess
    conn: Connection
    deadline: float
    ready: bool = False
    task: int | None = None

    @property
    def idle(self) -> bool:
        return self.ready and self.task is None


@dataclass
class _Batch:
    """Answers of one `Grader.grade` call still to grade, and the verdicts so far."""

    responses: Sequence[str]
    golds: Sequence[str]
    mode: GradingMode
    queue: deque[int]
    results: list[GradeResult | None]


class Grader:
    """A reusable pool of grading workers; use it as a context manager.

    >>> with Grader(mode="math", workers=2, timeout_s=5.0) as grader:
    ...     results = grader.grade(["The answer is $\\\\boxed{0.5}$"], ["\\\\frac{1}{2}"])
    """

    def __init__(
        self,
        mode: GradingMode | str = GradingMode.MATH,
        workers: int = DEFAULT_WORKERS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if workers < 1:
            raise UserError(f"grading needs at least one worker, got workers={workers}")
        if not timeout_s > 0:
            raise UserError(f"grading timeout must be positive, got timeout_s={timeout_s}")
        self.mode = as_mode(mode)
        self.workers = workers
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._context = multiprocessing.get_context("forkserver")
        self._pool: list[_Worker] = []

    def __enter__(self) -> Grader:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers and wait until each has loaded math-verify (a no-op when already running)."""
        if self._pool:
            return
        # Takes effect when this call starts the forkserver; one started earlier without it still
        # works, its workers just import math-verify themselves.
        self._context.set_forkserver_preload([_RULES_MODULE])
        try:
            self._pool = [self._spawn() for _ in range(self.workers)]
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    def wait_ready(self) -> None:
        """Block until every worker has loaded math-verify, replacements of dead workers included."""
        while not all(worker.ready for worker in self._pool):
            self._collect(None)

    @property
    def processes(self) -> tuple[BaseProcess, ...]:
        """The worker processes, for monitoring; the pool replaces any that die."""
        return tuple(worker.process for worker in self._pool)

    def close(self) -> None:
        """Stop the workers; the Grader can be started again afterwards."""
        for worker in self._pool:
            with contextlib.suppress(OSError):  # already dead: the join below reaps it
                worker.conn.send(None)
        for worker in self._pool:
            worker.process.join(_CLOSE_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._pool = []

    def grade(
        self, responses: Sequence[str], golds: Sequence[str], mode: GradingMode | str | None = None
    ) -> list[GradeResult]:
        """Grade `responses[i]` against `golds[i]`; results come back in input order."""
        if len(responses) != len(golds):
            raise UserError(f"got {len(responses)} responses but {len(golds)} gold answers")
        mode = self.mode if mode is None else as_mode(mode)
        if mode is GradingMode.GSM8K:
            for gold in golds:
                numeric_gold(gold)
        elif mode is GradingMode.CHOICE:
            for gold in golds:
                choice_gold(gold)
        elif mode is GradingMode.CODE:
            for gold in set(golds):
                parse_test_spec(gold)
        self.start()
        batch = _Batch(responses, golds, mode, deque(range(len(responses))), [None] * len(responses))
        while batch.queue or any(worker.task is not None for worker in self._pool):
            for worker in self._pool:
                if worker.idle and batch.queue:
                    self._dispatch(worker, batch)
            self._collect(batch)
        done = [result for result in batch.results if result is not None]
        assert len(done) == len(batch.results), "every dispatched answer gets exactly one verdict"
        return done

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_serve, args=(child_end,), name="attncore-grader", daemon=True)
        process.start()
        child_end.close()
        return _Worker(process, parent_end, deadline=time.monotonic() + self.start_timeout_s)

    def _replace(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        self._pool[self._pool.index(worker)] = self._spawn()

    def _dispatch(self, worker: _Worker, batch: _Batch) -> None:
        index = batch.queue.popleft()
        worker.task = index
        worker.deadline = time.monotonic() + self.timeout_s
        try:
            worker.conn.send((index, batch.responses[index], batch.golds[index], batch.mode.value))
        except OSError:  # the worker died while idle: grade this answer on its replacement
            batch.queue.appendleft(index)
            self._replace(worker)

    def _collect(self, batch: _Batch | None) -> None:
        """Wait for the next message or deadline; record verdicts and replace dead or overdue workers."""
        waiting = [worker for worker in self._pool if not worker.idle]
        timeout = max(0.0, min(worker.deadline for worker in waiting) - time.monotonic())
        for conn in wait([worker.conn for worker in waiting], timeout):
            worker = next(w for w in waiting if w.conn is conn)
            try:
                message = conn.recv()
            except (EOFError, OSError):
                self._on_death(worker, batch)
                continue
            if message == _READY:
                worker.ready = True
            elif batch is not None:
                index, result = message
                batch.results[index] = result
            worker.task = None
        now = time.monotonic()
        for worker in list(self._pool):
            if not worker.idle and worker.deadline <= now:
                if not worker.ready:
                    raise RuntimeError(f"a grading worker did not start within {self.start_timeout_s:g} s")
                if batch is not None and worker.task is not None:
                    batch.results[worker.task] = GradeResult(False, None, Reason.TIMEOUT)
                self._replace(worker)

    def _on_death(self, worker: _Worker, batch: _Batch | None) -> None:
        if not worker.ready:
            worker.process.join()
            raise RuntimeError(
                f"a grading worker exited with code {worker.process.exitcode} while starting; see its traceback "
                "above (a script that starts a Grader needs an `if __name__ == '__main__':` guard)"
            )
        if batch is not None and worker.task is not None:
            batch.results[worker.task] = GradeResult(False, None, Reason.CRASHED)
        self._replace(worker)


def grade_answers(
    responses: Sequence[str],
    golds: Sequence[str],
    mode: GradingMode | str = GradingMode.MATH,
    workers: int = DEFAULT_WORKERS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[GradeResult]:
    """One-shot grading with a fresh pool; keep a `Grader` open instead when grading repeatedly."""
    with Grader(mode, workers=workers, timeout_s=timeout_s) as grader:
        return grader.grade(responses, golds)
