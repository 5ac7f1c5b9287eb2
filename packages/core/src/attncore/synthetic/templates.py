"""The prose of trace steps: step roles and, per role, templates that open with a segmenter phrase.

Every template starts with its opening, a phrase of the AttnPO segmenter (spec §3.1): a reflection
phrase (class 1, matched anywhere) or a progression/summary phrase (class 2/3, matched at line starts).
The rest of a template contains no other segmenter phrase, no line break and no '=' outside `{eq}`-style
slots, and renders to at least 80 characters, so the segmenter cuts a trace exactly at its steps and
merges none of them.

Both labels use both opening groups and nearly every phrase opens steps of both labels: essential
computations sometimes open with "Wait"/"Alternatively", corrections with "Let me double-check", and
re-verifications or detours with "So"/"Now", so the opening phrase alone does not reveal the label.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Group = Literal["progression", "reflection"]


class StepRole(StrEnum):
    """What a step does. Compute and correction steps are essential; the others are redundant."""

    COMPUTE = "compute"  # first derivation of a value the answer needs
    CORRECTION = "correction"  # derives the needed value after a slip, opening with a reflection
    RESTATE = "restate"  # restates the problem or the values known so far, no equation
    REVERIFY = "reverify"  # recomputes an earlier result, which is already known
    SELF_CHECK = "self_check"  # undoes an earlier step (its result is a known value) or sanity-checks
    ABANDONED = "abandoned"  # combines numbers in a way that leads nowhere; its value is never used
    SLIP = "slip"  # attempts the next computation with an arithmetic error; corrected next
    RECOMPUTE = "recompute"  # once the answer is found, redoes every computation; all results are known

    @property
    def essential(self) -> bool:
        return self in (StepRole.COMPUTE, StepRole.CORRECTION)


REDUNDANT_ROLES = tuple(role for role in StepRole if not role.essential)

# Slots: {clause} the problem fact behind an operation, {meaning} what its result is, {eq} the rendered
# equation, {result} its result, {lhs} its left-hand side, {wrong} a slipped result, {unit}.
FIRST_COMPUTE = ("First,", "First, {clause}, so {meaning} comes to {eq}.")

COMPUTE: dict[Group, tuple[tuple[str, str], ...]] = {
    "progression": (
        ("Next", "Next, {clause}, so {meaning} comes to {eq}, and I will carry {result} forward."),
        ("Now", "Now, {clause}. That means {meaning} is {eq}, which I keep for later."),
        ("Then", "Then {clause}, which makes {meaning} equal to {eq} from here on."),
        ("So", "So {meaning} must be {eq}, because {clause} in the problem."),
        ("Okay, so", "Okay, so {clause}; that gives {meaning} as {eq}."),
        ("Let me", "Let me work out {meaning} now: since {clause}, it is {eq}."),
        ("Let's", "Let's find {meaning}. Because {clause}, it is {eq}."),
        ("To", "To get {meaning}, I use the fact that {clause}: {eq}."),
        ("Since", "Since {clause}, {meaning} works out to {eq} at this point."),
        ("Hmm", "Hmm, the next piece is that {clause}, so {meaning} is {eq}."),
        ("Okay", "Okay, moving on: {clause}, which puts {meaning} at {eq}."),
        ("Given that", "Given that {clause}, {meaning} is {eq}, and that is the number to use next."),
        ("The problem gives", "The problem gives one more fact: {clause}. So {meaning} is {eq}."),
    ),
    "reflection": (
        ("Wait", "Wait, I have not used the part where {clause} yet: {eq}, so {meaning} is {result}."),
        ("But", "But {clause}, so I still need {meaning}: {eq}."),
        ("Hmm, wait", "Hmm, wait, there is still the part where {clause}, which gives {meaning} as {eq}."),
        ("However", "However, {clause}, so {meaning} has to be worked out too: {eq}."),
        ("Hold on", "Hold on, before going further I need {meaning}, since {clause}: {eq}."),
        ("Alternatively", "Alternatively, I can go straight to {meaning}: since {clause}, it is {eq}."),
        ("Another approach", "Another approach to this part: {clause}, so {meaning} comes to {eq}."),
        ("Another way", "Another way to put it: {clause}, which means {meaning} is {eq}."),
    ),
}

# A correction follows a slip and derives the value the slip got wrong.
CORRECTION = (
    ("Wait", "Wait, {lhs} is not {wrong}. Redoing it carefully, {eq}, so {meaning} is {result}."),
    (
        "Hmm, wait",
        "Hmm, wait, that last step was off. The correct value is {eq}, not {wrong}, so {meaning} is {result}.",
    ),
    ("Hold on", "Hold on, I slipped there: {eq}, not {wrong}. That makes {meaning} equal to {result}."),
    ("But", "But {lhs} does not give {wrong}; done properly it is {eq}, so {meaning} is {result}."),
    (
        "Let me double-check",
        "Let me double-check that last step: {eq}, not {wrong}, so {meaning} is really {result}.",
    ),
    (
        "Let me verify",
        "Let me verify that last computation again: {eq}. I had {wrong} before, so {meaning} is {result}.",
    ),
    (
        "Just to make sure",
        "Just to make sure, I redo the last step: {eq}, not {wrong}. So {meaning} is {result}.",
    ),
    (
        "Hmm, let me check",
        "Hmm, let me check that again: {eq}, which is not {wrong}, so {meaning} is {result}.",
    ),
    ("Is that right?", "Is that right? Redoing it, {eq} and not {wrong}, so {meaning} is {result}."),
    ("Let me make sure", "Let me make sure about {wrong}: in fact {eq}, so {meaning} is {result} instead."),
    ("So, is", "So, is {wrong} correct? Redoing it, {eq}, so {meaning} is {result} rather than {wrong}."),
)

# Slots: {problem} the problem text, {known} the values derived so far.
FIRST_RESTATE = ("First,", "First, let me restate the problem to be sure I have it: {problem}")
RESTATE_PROBLEM = (
    ("So", "So, to restate the problem: {problem}"),
    ("Okay, so", "Okay, so the problem says: {problem}"),
    ("The problem gives", "The problem gives the following: {problem}"),
    ("Let me", "Let me read the problem again. {problem}"),
    ("To", "To keep everything straight, here is the problem once more: {problem}"),
)
RESTATE_KNOWN = (
    ("So", "So, we know {known} so far, and these are the numbers worked out up to this point."),
    ("Now", "Now, collecting what we have: {known}, which are the values found so far."),
    ("Okay", "Okay, where things stand: {known}. These are the numbers I have so far."),
    ("Given that", "Given that {known}, the values worked out so far are all in place."),
    ("Next", "Next, a quick summary of what is known: {known}, all from the steps above."),
    ("Since", "Since {known}, I have everything worked out so far written down in one place."),
)

# A plan opening the thinking (a restatement: it computes nothing). Slot: {chain}, the quantities the
# essential steps will find, in order ("A, then B, then C"), so each later step can look up what comes
# next and the last one says when the work is done.
PLAN = (
    ("Okay", "Okay, here is the plan: find {chain}; the last one is what the question asks for."),
    ("Hmm", "Hmm, a plan first: I need {chain}, and the last of these answers the question."),
    ("Since", "Since each value builds on the ones before, the plan is {chain}, in that order."),
    ("Given that", "Given that the question asks for the last of them, I will find {chain}."),
    ("Let's", "Let's plan the work: {chain}, and the last of these is the answer."),
    ("To", "To answer the question, I will find {chain}, and the last one is what is asked."),
    ("So", "So the plan is to find {chain}; the last one is the quantity asked about."),
    ("Okay, so", "Okay, so the steps are {chain}, and the last of them answers the question."),
)

# Slots: {meaning}, {eq} (the earlier equation again) and {result}.
REVERIFY: dict[Group, tuple[tuple[str, str], ...]] = {
    "reflection": (
        ("Wait", "Wait, let me double-check {meaning}: {eq}, so that value still holds."),
        ("Let me double-check", "Let me double-check {meaning} once more: {eq}, the same as before."),
        ("Let me verify", "Let me verify {meaning} before moving on: {eq}, which matches what I found."),
        ("Just to make sure", "Just to make sure about {meaning}, I redo it: {eq}. Yes, that agrees."),
        ("Hmm, let me check", "Hmm, let me check {meaning} again: {eq}, and nothing has changed since then."),
        ("Hmm, wait", "Hmm, wait, let me recompute {meaning} once more: {eq}, the same as before."),
        ("Hold on", "Hold on, is {meaning} really {result}? Recomputing it, {eq}, so yes, it holds."),
        ("But", "But is {meaning} really {result}? Going through it again, {eq}, so it stands."),
    ),
    "progression": (
        ("So", "So, going over {meaning} one more time: {eq}, the same number as before."),
        ("Again", "Again, {meaning} is {eq}; recomputing it gives the very same number."),
        ("Now", "Now, recomputing {meaning} from scratch: {eq}, the value I had before."),
        ("Okay, so", "Okay, so {meaning} was {eq}, and doing it again gives the same number."),
        ("Let me", "Let me redo {meaning} to be safe: {eq}, exactly what I had the first time."),
        ("To", "To be safe, I recompute {meaning}: {eq}, which is the same as before."),
        ("Next", "Next, a quick look back at {meaning}: {eq}, which still holds as it was."),
        ("Then", "Then, going back over {meaning} once more, {eq}, unchanged from before."),
    ),
}

# Slots: {result} the checked value, {meaning}, {lhs} the expression that gave it, {inverse} the undoing
# equation (its result is an operand, a value already known).
SELF_CHECK: dict[Group, tuple[tuple[str, str], ...]] = {
    "reflection": (
        (
            "Is that right?",
            "Is that right? Going backwards from {result}, {inverse}, which is the number I started from, so it holds.",
        ),
        (
            "Hmm, let me make sure",
            "Hmm, let me make sure {result} makes sense for {meaning}: undoing the step, {inverse}.",
        ),
        (
            "Let me make sure",
            "Let me make sure {result} is consistent by reversing the step that produced it: {inverse}, which matches.",
        ),
        (
            "So, is",
            "So, is {result} reasonable for {meaning}? Reversing the step, {inverse}, so it fits well.",
        ),
        (
            "Wait",
            "Wait, does {result} really fit {meaning}? Undoing the operation gives {inverse}, consistent.",
        ),
        (
            "But",
            "But does {result} hold up? Working backwards from it, {inverse}, which brings back the earlier number.",
        ),
        (
            "Hold on",
            "Hold on, a quick sanity check on {result}: undoing it, {inverse}, which is where it came from.",
        ),
    ),
    "progression": (
        (
            "Now",
            "Now, checking {result} against where it came from: {inverse}, which is the number I started with.",
        ),
        (
            "Okay, so",
            "Okay, so {result} should undo back to the number it came from: {inverse}, and it does, so that step holds.",
        ),
        ("So", "So {result} for {meaning} is consistent, since reversing the step gives {inverse}."),
        (
            "Since",
            "Since {result} came from {lhs}, undoing it should give the start back: {inverse}, and it does.",
        ),
        ("Then", "Then, as a check on {result}: {inverse}, which is exactly where {meaning} came from."),
    ),
}
SANITY_CHECK = (
    (
        "Hmm",
        "Hmm, {result} {unit} for {meaning} sounds about right for numbers of this size, so nothing looks off.",
    ),
    (
        "Is that right?",
        "Is that right? {result} is a whole number, as a count of {unit} should be, so this looks fine to me.",
    ),
)

# Slots: {x}, {y} two numbers of the problem and {detour} an equation combining them into an unused value.
ABANDONED: dict[Group, tuple[tuple[str, str], ...]] = {
    "reflection": (
        (
            "Alternatively",
            "Alternatively, I could start by combining {x} and {y}: {detour}. That number does not answer the question, so I drop this idea.",
        ),
        (
            "Another approach",
            "Another approach would be to take {x} and {y} together first: {detour}. That route does not lead anywhere useful here.",
        ),
        (
            "Another way",
            "Another way might use {x} and {y} directly: {detour}. That quantity is not what is asked, so I set it aside.",
        ),
        (
            "However",
            "However, maybe {x} and {y} go together: {detour}. That does not fit the story, so I leave it.",
        ),
        (
            "Wait",
            "Wait, maybe {x} and {y} should be combined: {detour}. That is not what the question is about, so I drop it.",
        ),
    ),
    "progression": (
        (
            "Hmm",
            "Hmm, maybe {x} and {y} should be combined: {detour}. That mixes up things the question does not ask about, so I abandon it.",
        ),
        (
            "Let me",
            "Let me try a different order and combine {x} with {y}: {detour}. This is not getting me closer, so I go back to the plan.",
        ),
        (
            "Let's",
            "Let's see what happens if I combine {x} and {y}: {detour}. That is not a quantity the question needs, so never mind.",
        ),
        (
            "Then",
            "Then again, one could put {x} and {y} together: {detour}. That leads away from the question, so I set it aside.",
        ),
        (
            "Okay",
            "Okay, what if I combine {x} and {y}: {detour}? That number plays no part in the question, so I drop it.",
        ),
        (
            "Now",
            "Now, one idea is to combine {x} and {y}: {detour}. That is not needed for the answer, so I leave it there.",
        ),
    ),
}
# After the answer: the whole chain again in one step. Slots: {eqs} every result's meaning and equation in
# order ("A is a + b = c; B is ..."),
# {result} the answer, {unit}.
RECOMPUTE: dict[Group, tuple[tuple[str, str], ...]] = {
    "reflection": (
        (
            "Alternatively",
            "Alternatively, I can run through the whole chain once more from the start: {eqs}. That gives {result} {unit} again.",
        ),
        (
            "Let me double-check",
            "Let me double-check the whole thing from the very beginning: {eqs}, so the answer stays {result} {unit}.",
        ),
        (
            "Hold on",
            "Hold on, let me go through every step once more to be certain: {eqs}. Still {result} {unit}.",
        ),
        (
            "Wait",
            "Wait, let me redo all of it in a single pass, start to end: {eqs}, which again ends at {result}.",
        ),
    ),
    "progression": (
        (
            "So",
            "So, going through the whole problem in one pass to confirm it: {eqs}, and that ends at {result} {unit}.",
        ),
        (
            "Let me",
            "Let me redo everything from the start to be safe: {eqs}. The answer is {result} {unit} again.",
        ),
        (
            "Okay, so",
            "Okay, so all of it together, one step after another: {eqs}, which gives {result} {unit} once more.",
        ),
        (
            "Now",
            "Now, recomputing every value from the start as a final pass: {eqs}, so it is {result} {unit}.",
        ),
    ),
}

# Testbed v3 (`TraceConfig.answer_marker`): the step that derives the final answer says so, after its
# equation, so the end of the chain is written where a model decides whether to compute on. Slots: the
# answer's {result} and {unit}. Part of that step, which stays essential.
ANSWER_MARKERS = (
    "That is the last quantity, so the answer is {result} {unit}.",
    "This one answers the question: {result} {unit}.",
    "That was the last value to find: the answer is {result}.",
    "Nothing is left to compute: the answer is {result}.",
)

# Testbed v3 (`TraceConfig.anchor_after_answer`): every redundant step after the answer ends with one of
# these, so a look-back reads as checking a finished answer, never as a new starting point. No number
# and no equation: the step's label is unchanged.
ANSWER_ANCHORS = (
    "The answer stands; nothing is left to compute.",
    "That does not change the answer.",
    "The answer stays the same, and the work is done.",
    "So the answer holds, with nothing more to work out.",
)

ABANDONED_PLAN = (
    "Alternatively",
    "Alternatively, I could guess an answer and adjust it until it fits, but going through the quantities in order is more reliable.",
)
