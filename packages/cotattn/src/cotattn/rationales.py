"""`cotattn rationales`: teacher rationales in two phases through attncore's rollout job (molsaki-spec §9).

Phase 1 (`out/phase1`, a rollout folder): few-shot CoT on every problem, greedy by default, graded.
Phase 2 (`out/phase2`): the phase-1 failures, the question followed by the gold-answer hint. Both are
resumable rollout stores; phase 2's problems follow from phase 1's grades, so a rerun rebuilds the same
list. `out/rationales.jsonl` holds the kept items (graded correct), each with its provenance: teacher,
phase, rendered prompt, seed and rollout id; `cotattn teacher-targets` and `cotattn train` read it.
With `keywords` (CSQA) each row also holds the keywords the teacher listed in the same call.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from attncore.config import save_resolved
from attncore.data import Problem, load_problems_or_bundled, write_rows
from attncore.errors import UserError
from attncore.rollout.job import RolloutJobConfig, build_engine, run_rollouts
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout
from cotattn.config import RationalesConfig

PHASES = ("phase1", "phase2")
RATIONALES_NAME = "rationales.jsonl"
SUMMARY_NAME = "rationales_summary.json"


KEYWORDS_LINE = re.compile(r"^[ \t*]*keywords?[ \t*]*:(.*)(?:\n|$)", re.IGNORECASE | re.MULTILINE)
"""The teacher's keyword line (`Keywords: a, b`, markdown bold allowed); the last one counts."""


def parse_keywords(text: str) -> tuple[str, list[str] | None]:
    """The rationale without its keyword line, and the keywords listed there (comma- or semicolon-
    separated, quotes and trailing periods stripped, repeats dropped ignoring case).

    No `Keywords:` line gives None, a line naming no keyword gives []: the example is kept either way
    (both cross-entropies train on it) and, having no keyword units, skips L_att."""
    matches = list(KEYWORDS_LINE.finditer(text))
    if not matches:
        return text.strip(), None
    line = matches[-1]
    keywords: list[str] = []
    for item in re.split(r"[,;]", line.group(1)):
        word = item.strip().strip("\"'`*.").strip()
        if word and word.lower() not in {k.lower() for k in keywords}:
            keywords.append(word)
    return (text[: line.start()] + text[line.end() :]).strip(), keywords


def with_request(problem: Problem, request: str) -> Problem:
    """The problem with the keyword request after its question."""
    return replace(problem, problem=f"{problem.problem}\n\n{request}")


def guided_problem(problem: Problem, hint: str) -> Problem:
    """The phase-2 problem: the question, a blank line, and the hint naming the gold answer."""
    return replace(problem, problem=f"{problem.problem}\n\n{hint.format(answer=problem.answer)}")


def _phase_config(cfg: RationalesConfig, phase: str) -> RolloutJobConfig:
    return RolloutJobConfig(
        model=cfg.teacher,
        data=cfg.data,
        prompt=cfg.prompt,
        sampling=cfg.sampling,
        engine=cfg.engine,
        batch_size=cfg.batch_size,
        refill=cfg.refill,
        vllm=cfg.vllm,
        grading=cfg.grading,
        grade=True,
        out=str(Path(cfg.out) / phase),
        overwrite=cfg.overwrite,
        threads=cfg.threads,
        tracking=cfg.tracking,
    )


def _graded(folder: Path) -> dict[str, Rollout]:
    """problem id -> its graded rollout."""
    return {r.problem_id: r for r in RolloutStore.open_existing(folder).read()}


def kept_row(
    rollout: Rollout, question: str, phase: int, teacher: str, keywords: bool = False
) -> dict[str, Any]:
    """A kept rationale with its provenance (the question is the original one in both phases); with
    `keywords`, the keyword line moves from the rationale to the row's `keywords`."""
    rationale, listed = parse_keywords(rollout.text) if keywords else (rollout.text.strip(), None)
    row = {
        "id": rollout.problem_id,
        "problem": question,
        "rationale": rationale,
        "answer": rollout.gold,
        "phase": phase,
        "teacher": teacher,
        "prompt": rollout.prompt,
        "seed": rollout.seed,
        "rollout_id": rollout.rollout_id,
    }
    if keywords:
        row["keywords"] = listed
    return row


def run_rationales(cfg: RationalesConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) both phases and write the kept rationales; returns the summary."""
    out = Path(cfg.out)
    problems, origin = load_problems_or_bundled(cfg.data)
    if not problems:
        raise UserError(f"{cfg.data.name}/{cfg.data.split} holds no problems")
    save_resolved(cfg, out)
    first = _phase_config(cfg, PHASES[0])
    engine = build_engine(first)
    asked = [with_request(p, cfg.keywords_request) for p in problems] if cfg.keywords else problems
    run_rollouts(first, progress=progress, engine=engine, problems=asked)
    phase1 = _graded(out / PHASES[0])
    failed = [p for p in asked if not phase1[p.id].extra.get("correct")]
    second = _phase_config(cfg, PHASES[1])
    phase2: dict[str, Rollout] = {}
    if failed:
        guided = [guided_problem(p, cfg.guided_hint) for p in failed]
        run_rollouts(second, progress=progress, engine=engine, problems=guided)
        phase2 = _graded(out / PHASES[1])
    rows = []
    for problem in problems:
        for phase, graded in ((1, phase1), (2, phase2)):
            rollout = graded.get(problem.id)
            if rollout is not None and rollout.extra.get("correct"):
                rows.append(kept_row(rollout, problem.problem, phase, cfg.teacher.name, cfg.keywords))
                break
    write_rows(rows, out / RATIONALES_NAME)
    summary = {
        "source": origin,
        "problems": len(problems),
        "kept_phase1": sum(r["phase"] == 1 for r in rows),
        "guided": len(failed),
        "kept_phase2": sum(r["phase"] == 2 for r in rows),
        "kept": len(rows),
    }
    if cfg.keywords:
        summary["kept_without_keyword_line"] = sum(r["keywords"] is None for r in rows)
        summary["kept_with_no_keyword"] = sum(r["keywords"] == [] for r in rows)
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    return summary
