"""Why a testbed model's answers are wrong: a table over its evaluation rollouts (pure Python, no torch).

    uv run python experiments/testbed/wrong_answers.py ROLLOUTS.jsonl [--examples N]

ROLLOUTS is what `attncore synth evaluate --rollouts` writes (fields text, problem, gold, pred, correct,
finish_reason, well_formed, difficulty). Each step of a rollout is segmented and labelled by the oracle
(`attncore.synthetic.oracle`, labels against the model's own boxed answer) and given the *form* of the
generator template it imitates (compute, re-verification, self-check, recomputation of the chain,
restatement, abandoned detour; "other" when it matches none; a v3 answer marker or anchor at the end of
a step is left out). A wrong answer is:

- truncated: no `</think>` (or stopped by the token limit);
- malformed: closed, but not well formed (no boxed number, garbled equation);
- gold reached, then moved off: a step states an arithmetically right equation whose result is the gold
  answer, and the boxed answer is something else. The *drift step* is the first step after it that the
  oracle labels essential (it derives a value the wrong answer depends on); the table says which form the
  step right before the drift has, whether the drift step is phrased as a computation, and whether it
  redoes a quantity the trace had already computed or names one the problem does not have;
- never reached, with an arithmetic slip (some equation's stated result is wrong);
- never reached, with right arithmetic (a wrong operation, operand or missing step).

It also counts, over all rollouts, the step that first reached the gold value and every step after it, by
form, and how often the next step derives a value a wrong answer uses: the hazard of each form.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from attncore.synthetic import templates as t
from attncore.synthetic.oracle import Label, Labelling, label_trace

SLOT = re.compile(r"\{(\w+)\}")


def _pattern(template: str) -> re.Pattern:
    """A template as a regex: literal text exactly, each slot any text (named by its first occurrence)."""
    parts, seen, last = [], set(), 0
    for match in SLOT.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        name = match.group(1)
        parts.append(f"(?P<{name}>.+?)" if name not in seen else "(?:.+?)")
        seen.add(name)
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts), re.DOTALL)


def _templates() -> list[tuple[str, re.Pattern, int]]:
    """(form, pattern, literal characters) for every template of the generator."""
    grouped = lambda table: [tpl for pairs in table.values() for _, tpl in pairs]  # noqa: E731
    plans = [f"{plan} {t.FIRST_COMPUTE[1]}" for _, plan in t.PLAN]
    forms = {
        "compute": [t.FIRST_COMPUTE[1], *plans, *grouped(t.COMPUTE), *(tpl for _, tpl in t.CORRECTION)],
        "reverify": grouped(t.REVERIFY),
        "self_check": [*grouped(t.SELF_CHECK), *(tpl for _, tpl in t.SANITY_CHECK)],
        "recompute": grouped(t.RECOMPUTE),
        "restate": [
            t.FIRST_RESTATE[1],
            *(tpl for _, tpl in t.RESTATE_PROBLEM + t.RESTATE_KNOWN + t.PLAN),
        ],
        "abandoned": [*grouped(t.ABANDONED), t.ABANDONED_PLAN[1]],
    }
    return [(form, _pattern(tpl), len(SLOT.sub("", tpl))) for form, tpls in forms.items() for tpl in tpls]


TEMPLATES = _templates()
# v3's closing sentences (a marker after the answer's equation, an anchor after a redundant step)
ENDINGS = re.compile(
    "|".join(
        " " + SLOT.sub("(?:.+?)", re.escape(tpl).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        for tpl in (*t.ANSWER_MARKERS, *t.ANSWER_ANCHORS)
    )
)


def step_form(text: str) -> tuple[str, dict[str, str]]:
    """The form of the template `text` imitates (the most literal text matched wins) and its slots; a
    v3 marker or anchor at its end is left out."""
    text = text.strip()
    ending = ENDINGS.search(text)
    if ending:
        text = text[: ending.start()]
    best = ("other", {}, -1)
    for form, pattern, literal in TEMPLATES:
        match = pattern.fullmatch(text)
        if match and literal > best[2]:
            best = (form, match.groupdict(), literal)
    return best[0], best[1]


@dataclass(frozen=True)
class Diagnosis:
    """One wrong rollout: its class and, for a drift, what came before it and what the drift did."""

    kind: str
    arithmetic_ok: bool
    before_drift: str | None = None  # form of the step right before the drift ("gold step": none between)
    between: tuple[str, ...] = ()  # forms of the steps between the gold step and the drift
    drift_form: str | None = None
    drift_quantity: str | None = None  # "repeated": a quantity computed before; "new": one not computed
    plan_overrun: bool = False  # the plan names more quantities than the problem has operations


def _gold_step(labelling: Labelling, gold: Fraction) -> int | None:
    for i, step in enumerate(labelling.steps):
        if any(eq.result == gold and eq.correct for eq in step.equations):
            return i
    return None


def _plan_length(steps: list[str]) -> int | None:
    for text in steps:
        _, slots = step_form(text)
        if "chain" in slots:
            return len(slots["chain"].split(", then "))
    return None


def diagnose(row: dict, labelling: Labelling, forms: list[tuple[str, dict[str, str]]]) -> Diagnosis:
    """The class of a rollout graded wrong, from its oracle labelling and the forms of its steps."""
    steps = labelling.steps
    arithmetic_ok = not any(step.wrong_arithmetic for step in steps)
    if row.get("finish_reason") == "length" or "</think>" not in row["text"]:
        return Diagnosis("truncated", arithmetic_ok)
    if not row.get("well_formed", labelling.well_formed):
        return Diagnosis("malformed", arithmetic_ok)
    gold = Fraction(row["gold"])
    g = _gold_step(labelling, gold)
    if g is None:
        return Diagnosis(
            "never reached, arithmetic slip" if not arithmetic_ok else "never reached, right arithmetic",
            arithmetic_ok,
        )
    plan = _plan_length([s.text for s in steps])
    overrun = plan is not None and plan > int(row["difficulty"])
    drift = next((i for i in range(g + 1, len(steps)) if steps[i].label is Label.ESSENTIAL), None)
    if drift is None:
        return Diagnosis("gold reached, then boxed another value", arithmetic_ok, plan_overrun=overrun)
    earlier = {
        slots["meaning"].strip() for form, slots in forms[:drift] if form == "compute" and "meaning" in slots
    }
    form, slots = forms[drift]
    quantity = None
    if form == "compute" and "meaning" in slots:
        quantity = "repeated" if slots["meaning"].strip() in earlier else "new"
    between = tuple(f for f, _ in forms[g + 1 : drift])
    return Diagnosis(
        "gold reached, then moved off",
        arithmetic_ok,
        before_drift=between[-1] if between else "gold step",
        between=between,
        drift_form=form,
        drift_quantity=quantity,
        plan_overrun=overrun,
    )


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rollouts", type=Path)
    parser.add_argument("--examples", type=int, default=0, help="print this many drift examples")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.rollouts.read_text().splitlines() if line.strip()]

    diagnoses: list[Diagnosis] = []
    after_gold: Counter[str] = Counter()  # steps after the gold step, by form, over all rollouts
    followed_by_drift: Counter[str] = Counter()
    shown = 0
    for row in rows:
        labelling = label_trace(row["text"], row["problem"], row["gold"])
        forms = [step_form(step.text) for step in labelling.steps]
        g = _gold_step(labelling, Fraction(row["gold"]))
        if g is not None and "</think>" in row["text"]:
            for i in range(g, len(forms)):
                nxt = (
                    i + 1 < len(forms)
                    and labelling.steps[i + 1].label is Label.ESSENTIAL
                    and not row["correct"]
                )
                name = "gold step" if i == g else forms[i][0]
                after_gold[name] += 1
                followed_by_drift[name] += nxt
        if row["correct"]:
            continue
        d = diagnose(row, labelling, forms)
        diagnoses.append(d)
        if d.kind == "gold reached, then moved off" and shown < args.examples:
            shown += 1
            print(f"--- {row['problem_id']} gold {row['gold']} pred {row['pred']}: {d}")
            for step, (form, _) in zip(labelling.steps, forms, strict=True):
                print(f"  [{step.label.value[:3]} {form}] {step.text.strip()}")

    n = len(diagnoses)
    print(f"{args.rollouts}: {len(rows)} rollouts, {len(rows) - n} right, {n} wrong")
    print("\n| wrong answers | count | of which no wrong equation |\n|---|---:|---:|")
    kinds = Counter(d.kind for d in diagnoses)
    for kind, count in kinds.most_common():
        ok = sum(d.arithmetic_ok for d in diagnoses if d.kind == kind)
        print(f"| {kind} | {_share(count, n)} | {ok} |")

    drifts = [d for d in diagnoses if d.kind == "gold reached, then moved off"]
    m = len(drifts)
    print(f"\n| the {m} drifts | count | of which no wrong equation |\n|---|---:|---:|")

    def line(what: str, chosen: list[Diagnosis]) -> None:
        print(f"| {what} | {_share(len(chosen), m)} | {sum(d.arithmetic_ok for d in chosen)} |")

    for form, _ in Counter(d.before_drift for d in drifts).most_common():
        line(f"step right before the drift: {form}", [d for d in drifts if d.before_drift == form])
    for form, _ in Counter(f for d in drifts for f in set(d.between)).most_common():
        line(
            f"a step of form {form} anywhere between gold and drift", [d for d in drifts if form in d.between]
        )
    for form, _ in Counter(d.drift_form for d in drifts).most_common():
        line(f"drift step phrased as: {form}", [d for d in drifts if d.drift_form == form])
    for q in ("repeated", "new"):
        line(
            f"drift step computes a quantity {'computed before' if q == 'repeated' else 'not computed before'}",
            [d for d in drifts if d.drift_quantity == q],
        )
    line("plan names more quantities than the problem has", [d for d in drifts if d.plan_overrun])

    print(
        "\n| step from the gold step on (all rollouts) | steps | next step derives part of a wrong answer |\n|---|---:|---:|"
    )
    for form, count in after_gold.most_common():
        print(f"| {form} | {count} | {_share(followed_by_drift[form], count)} |")


if __name__ == "__main__":
    main()
