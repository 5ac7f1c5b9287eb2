"""Multi-step arithmetic word problems with a GSM8K-like surface and a known computation.

A problem is one to three people ("chains") who each start with an amount of something and then
gain, lose, multiply or split it; the question combines the chains (sum or difference) and may end
with one more step (share among friends, or convert to points). Every operation is stored with its
operands, so the answer is the evaluation of the stored operations and the difficulty is their count.

Every number in a problem is distinct (given quantities, distractors, intermediate results): a value
then identifies the computation that produced it, which is what the oracle labeller relies on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from attncore.errors import UserError
from attncore.synthetic.arithmetic import apply
from attncore.synthetic.config import ProblemConfig

MAX_ATTEMPTS = 500

PEOPLE = (
    ("Mia", "she", "her"),
    ("Tom", "he", "his"),
    ("Ava", "she", "her"),
    ("Leo", "he", "his"),
    ("Nora", "she", "her"),
    ("Sam", "he", "his"),
    ("Ivy", "she", "her"),
    ("Omar", "he", "his"),
    ("Lena", "she", "her"),
    ("Raj", "he", "his"),
    ("Zoe", "she", "her"),
    ("Finn", "he", "his"),
    ("Rosa", "she", "her"),
    ("Kai", "he", "his"),
    ("Lucy", "she", "her"),
    ("Hugo", "he", "his"),
    ("Anya", "she", "her"),
    ("Theo", "he", "his"),
    ("June", "she", "her"),
    ("Ravi", "he", "his"),
)


@dataclass(frozen=True)
class Theme:
    """What the quantities count, and event templates per operation: (clause, gerund) pairs.

    Clauses use {who} (name or pronoun), {poss} (her/his), {n} and {unit}; gerunds name the event in a
    result's description ("Mia's marbles after {gerund}").
    """

    units: tuple[str, ...]
    start: tuple[str, ...]
    add: tuple[tuple[str, str], ...]
    sub: tuple[tuple[str, str], ...]
    mul: tuple[tuple[str, str], ...]
    div: tuple[tuple[str, str], ...]


THEMES = (
    Theme(
        units=("marbles", "stickers", "stamps", "seashells", "beads", "pencils", "toy cars", "trading cards"),
        start=("{who} has {n} {unit}.", "{who} owns a collection of {n} {unit}."),
        add=(
            ("{who} buys {n} more {unit} at the fair", "buying more at the fair"),
            ("{who} gets {n} more {unit} as a gift", "the gift"),
            ("{who} finds {n} more {unit} in a drawer", "the find in the drawer"),
        ),
        sub=(
            ("{who} gives {n} {unit} to a friend", "giving some to a friend"),
            ("{who} loses {n} {unit} on the way home", "the loss on the way home"),
            ("{who} sells {n} {unit} at a yard sale", "the yard sale"),
        ),
        mul=(
            ("{who} trades up and ends the month with {n} times as many {unit} as before", "the trades"),
            ("{who} keeps collecting until {poss} pile is {n} times as big as before", "more collecting"),
        ),
        div=(
            ("{who} splits the {unit} into {n} equal piles and keeps only one pile", "keeping one pile"),
            ("{who} packs the {unit} into {n} equal bags and keeps just one bag", "keeping one bag"),
        ),
    ),
    Theme(
        units=("dollars",),
        start=("{who} has {n} {unit} saved.", "{who} starts the week with {n} {unit}."),
        add=(
            ("{who} earns {n} more {unit} walking dogs", "walking dogs"),
            ("{who} receives {n} {unit} for a birthday", "the birthday money"),
        ),
        sub=(
            ("{who} spends {n} {unit} on a book", "buying the book"),
            ("{who} pays {n} {unit} for lunch", "paying for lunch"),
        ),
        mul=(("{who} invests the money and ends the year with {n} times as many {unit}", "the investment"),),
        div=(
            (
                "{who} splits the money equally into {n} envelopes and keeps one envelope",
                "keeping one envelope",
            ),
        ),
    ),
    Theme(
        units=("cookies", "muffins", "cupcakes"),
        start=("{who} bakes {n} {unit}.", "{who} has a tray of {n} {unit}."),
        add=(
            ("{who} bakes {n} more {unit} in the afternoon", "the afternoon baking"),
            ("{who} buys {n} more {unit} at the bakery", "the bakery visit"),
        ),
        sub=(
            ("{who} gives {n} {unit} to the neighbours", "the gift to the neighbours"),
            ("{who} eats {n} of the {unit}", "eating some"),
        ),
        mul=(("{who} gets a big order and ends up with {n} times as many {unit}", "the big order"),),
        div=(("{who} packs the {unit} into {n} equal boxes and keeps one box", "keeping one box"),),
    ),
    Theme(
        units=("apples", "pears", "plums"),
        start=("{who} picks {n} {unit}.", "{who} has a basket of {n} {unit}."),
        add=(
            ("{who} picks {n} more {unit} from another tree", "picking from another tree"),
            ("{who} buys {n} more {unit} at the market", "the market visit"),
        ),
        sub=(
            ("{who} uses {n} {unit} for a pie", "baking the pie"),
            ("{who} gives {n} {unit} to a neighbour", "the gift to a neighbour"),
        ),
        mul=(("{who} harvests the whole orchard and ends up with {n} times as many {unit}", "the harvest"),),
        div=(("{who} shares the {unit} equally among {n} crates and keeps one crate", "keeping one crate"),),
    ),
)

DISTRACTORS = (
    "{who} is {n} years old.",
    "{who}'s school is {n} minutes away by bus.",
    "{who} keeps {n} books on a shelf.",
    "{who}'s street has {n} houses.",
    "The shop nearby sells {n} kinds of juice.",
)

CONNECTORS = ("Then", "After that,", "Later,", "Next,")


@dataclass(frozen=True)
class Operation:
    """One computation of the answer: `left op right = result`.

    `left_from`/`right_from` give the index of the operation that produced an operand, or None when the
    operand is a quantity stated in the problem. `meaning` names the result for the trace's prose and
    `clause` states the fact of the problem that calls for this operation.
    """

    op: str
    left: int
    right: int
    result: int
    left_from: int | None
    right_from: int | None
    meaning: str
    clause: str
    unit: str


@dataclass(frozen=True)
class SyntheticProblem:
    """A word problem, the operations that solve it (in a valid order) and its unused quantities."""

    text: str
    operations: tuple[Operation, ...]
    quantities: tuple[int, ...]  # every number stated in the text, distractors included
    distractors: tuple[int, ...]

    @property
    def answer(self) -> int:
        return self.operations[-1].result

    @property
    def difficulty(self) -> int:
        return len(self.operations)


@dataclass(frozen=True)
class _Person:
    name: str
    pronoun: str
    poss: str


class _Builder:
    """Draws the numbers of one problem while keeping every value distinct and within bounds."""

    def __init__(self, rng: random.Random, cfg: ProblemConfig):
        self.rng, self.cfg = rng, cfg
        self.used: set[int] = set()
        self.operations: list[Operation] = []

    def fresh(self, low: int, high: int, accept: Callable[[int], bool] = lambda n: True) -> int:
        """A given number in [low, high] not used yet (and accepted); raises `_Retry` if none is left."""
        choices = [n for n in range(low, high + 1) if n not in self.used and accept(n)]
        if not choices:
            raise _Retry
        value = self.rng.choice(choices)
        self.used.add(value)
        return value

    def record(
        self, op: str, left: int, right: int, sources: tuple[int | None, int | None], **text: str
    ) -> int:
        result = apply(op, left, right)
        if result.denominator != 1 or result < 1 or result > self.cfg.max_value or int(result) in self.used:
            raise _Retry
        value = int(result)
        self.used.add(value)
        self.operations.append(Operation(op, left, right, value, *sources, **text))
        return value

    def step(self, op: str, value: int, source: int | None, **text: str) -> tuple[int, int]:
        """Apply `op` with a fresh given number to a running value; returns (given number, new value).

        `{n}` in the texts becomes the given number. Raises `_Retry`, leaving no trace, when no given
        number fits.
        """
        low, high = self.cfg.number_range
        f_low, f_high = self.cfg.factor_range
        if op == "+":
            n = self.fresh(low, min(high, self.cfg.max_value - value))
        elif op == "-":
            n = self.fresh(low, min(high, value - 1))
        elif op == "*":
            n = self.fresh(f_low, min(f_high, self.cfg.max_value // value))
        else:
            n = self.fresh(f_low, min(f_high, value - 1), accept=lambda d: value % d == 0)
        text = {k: v.replace("{n}", str(n)) for k, v in text.items()}
        try:
            return n, self.record(op, value, n, (source, None), **text)
        except _Retry:
            self.used.discard(n)
            raise


class _Retry(Exception):
    """The numbers drawn so far cannot be completed; start the problem again."""


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """`total` operations split at random over `parts` chains (a chain may get none)."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    bounds = [0, *cuts, total]
    return [bounds[i + 1] - bounds[i] for i in range(parts)]


def _shape(rng: random.Random, difficulty: int) -> tuple[int, bool, str]:
    """(number of chains, whether a final share/convert step follows, how the chains combine)."""
    options = []
    for chains in (1, 2, 3):
        for tail in (False, True):
            if difficulty - (chains - 1) - tail < 0:
                continue
            combines = ("+", "-") if chains == 2 and not tail else ("+",)
            options.extend((chains, tail, combine) for combine in combines)
    return rng.choice(options)


# Suffixes naming the second, third, ... time a person's event recurs, so no two quantities share a name
# (a plan listing "A, then A" tells the model nothing). A chain has at most 6 events.
REPEATS = ("", " again", " a third time", " a fourth time", " a fifth time", " a sixth time")


def _chain(
    builder: _Builder, theme: Theme, unit: str, person: _Person, length: int
) -> tuple[list[str], int, int | None]:
    """One person's sentences; returns them, the final amount and the operation that produced it."""
    rng = builder.rng
    value = builder.fresh(*builder.cfg.number_range)
    story = [rng.choice(theme.start).format(who=person.name, n=value, unit=unit)]
    source: int | None = None
    told: list[str] = []  # event templates already used for this person, to vary the story
    for _ in range(length):
        for op in rng.sample(["+", "-", "*", "/"], 4):
            events = {"+": theme.add, "-": theme.sub, "*": theme.mul, "/": theme.div}[op]
            clause, gerund = rng.choice([e for e in events if e[0] not in told] or events)
            repeat = REPEATS[told.count(clause)]  # a repeated event gets a distinct name
            try:
                n, value = builder.step(
                    op,
                    value,
                    source,
                    meaning=f"{person.name}'s {unit} after {gerund}{repeat}",
                    clause=clause.format(who=person.name, poss=person.poss, unit=unit, n="{n}"),
                    unit=unit,
                )
            except _Retry:
                continue
            told.append(clause)
            sentence = clause.format(who=person.pronoun, poss=person.poss, unit=unit, n=n)
            story.append(f"{rng.choice(CONNECTORS)} {sentence}.")
            source = len(builder.operations) - 1
            break
        else:
            raise _Retry
    return story, value, source


def _difference(builder: _Builder, unit: str, finals: list[tuple[str, int, int | None]]) -> str:
    """The last operation `larger - smaller` of two chains; returns the question."""
    (big, big_value, big_src), (small, small_value, small_src) = sorted(finals, key=lambda f: -f[1])
    builder.record(
        "-",
        big_value,
        small_value,
        (big_src, small_src),
        meaning=f"how many more {unit} {big} has than {small}",
        clause=f"the question compares {big}'s {unit} with {small}'s",
        unit=unit,
    )
    return f"How many more {unit} does {big} have than {small}?"


def _total(builder: _Builder, unit: str, finals: list[tuple[str, int, int | None]], tail: bool) -> str:
    """Sum the chains, then optionally share the total or convert it to points; returns the question."""
    names = [name for name, _, _ in finals]
    _, total, source = finals[0]
    for i in range(1, len(finals)):
        together = f"{names[0]} and {names[1]}" if i == 1 else "all three"
        listed = f"{', '.join(names[:i])} and {names[i]}"
        total = builder.record(
            "+",
            total,
            finals[i][1],
            (source, finals[i][2]),
            meaning=f"the {unit} of {together} together",
            clause=f"the question puts the {unit} of {listed} together",
            unit=unit,
        )
        source = len(builder.operations) - 1
    if not tail:
        if len(finals) == 1:
            return f"How many {unit} does {names[0]} have now?"
        return f"How many {unit} do {', '.join(names[:-1])} and {names[-1]} have together?"
    whose = {1: f"{names[0]}'s", 2: "their", 3: "all their"}[len(finals)]
    try:
        builder.step(
            "/",
            total,
            source,
            meaning=f"the {unit} each friend gets",
            clause=f"{whose} {unit} are shared equally among {{n}} friends",
            unit=unit,
        )
        n = builder.operations[-1].right
        return (
            f"If {whose} {unit} are shared equally among {n} friends, how many {unit} does each friend get?"
        )
    except _Retry:
        one = unit.removesuffix("s")
        builder.step(
            "*",
            total,
            source,
            meaning=f"the points {whose} {unit} are worth",
            clause=f"each {one} is worth {{n}} points",
            unit="points",
        )
        n = builder.operations[-1].right
        return f"If each {one} is worth {n} points, how many points are {whose} {unit} worth?"


def _build(rng: random.Random, cfg: ProblemConfig, difficulty: int) -> SyntheticProblem:
    builder = _Builder(rng, cfg)
    theme = rng.choice(THEMES)
    unit = rng.choice(theme.units)
    chains, tail, combine = _shape(rng, difficulty)
    people = [_Person(*p) for p in rng.sample(PEOPLE, chains + 1)]
    lengths = _split(rng, difficulty - (chains - 1) - tail, chains)
    blocks: list[list[str]] = []
    finals: list[tuple[str, int, int | None]] = []
    for person, length in zip(people, lengths, strict=False):
        story, value, source = _chain(builder, theme, unit, person, length)
        blocks.append(story)
        finals.append((person.name, value, source))
    question = _difference(builder, unit, finals) if combine == "-" else _total(builder, unit, finals, tail)

    # Distractors go between the people's blocks (or at the ends), so pronouns keep their referents.
    distractors = []
    for _ in range(rng.randint(*cfg.distractors)):
        value = builder.fresh(*cfg.number_range)
        sentence = rng.choice(DISTRACTORS).format(who=rng.choice(people).name, n=value)
        blocks.insert(rng.randint(0, len(blocks)), [sentence])
        distractors.append(value)
    text = " ".join([*(s for block in blocks for s in block), question])
    given = tuple(
        n
        for op in builder.operations
        for n, src in ((op.left, op.left_from), (op.right, op.right_from))
        if src is None
    )
    return SyntheticProblem(text, tuple(builder.operations), given + tuple(distractors), tuple(distractors))


def generate_problem(rng: random.Random, cfg: ProblemConfig, difficulty: int) -> SyntheticProblem:
    """One problem needing exactly `difficulty` operations, drawn from `rng`."""
    for _ in range(MAX_ATTEMPTS):
        try:
            return _build(rng, cfg, difficulty)
        except _Retry:
            continue
    raise UserError(
        f"could not draw a problem of difficulty {difficulty} with distinct values within "
        f"number_range={list(cfg.number_range)}, factor_range={list(cfg.factor_range)}, max_value={cfg.max_value}"
    )
