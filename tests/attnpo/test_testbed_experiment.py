"""The AttnPO testbed experiment (experiments/attnpo/testbed): its arms differ only in their ablation
switches, they are evaluated on the starting model's problems, launch.sh picks arms, and the report's
table and curves carry the figures of the arm folders."""

from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path

import pytest

from attncore.config import load_config
from attncore.errors import UserError
from attncore.eval.metrics import mean_interval
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.testbed_model import EvaluationConfig
from attnpo.rescaled_log import oracle_labels
from attnpo.rescaled_view import pick_response, render_response
from attnpo.rl_report import read_metrics, write_report
from attnpo.train import TrainConfig

FOLDER = Path(__file__).resolve().parents[2] / "experiments" / "attnpo" / "testbed"
# What each arm changes in A2 (attnpo-spec §11), besides its output folder.
SWITCHES = {
    "a1_traineff": {"method.rescaling": {"enabled": False}, "method.heads": None},
    "a3_pos_only": {"method.rescaling.neg_adv": False},
    "a4_neg_only": {"method.rescaling.pos_adv": False},
    "a5_no_difficulty": {"method.rescaling.difficulty_aware": False},
    "a6_gamma_notes": {"method.rescaling.gamma_variant": "paper_notes"},
    "a7_random_heads": {"method.heads": {"kind": "random", "n": 3, "seed": 0}},
    "a8_thinking_baseline": {"method.rescaling.baseline": "thinking"},
}


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def arm(name: str) -> TrainConfig:
    return load_config(TrainConfig, FOLDER / f"{name}.yaml")


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_an_arm_is_a2_with_its_switches(name):
    a2 = arm("a2_attnpo")
    expected = load_config(
        TrainConfig,
        FOLDER / "a2_attnpo.yaml",
        [f"out=runs/attnpo/testbed/{name}"] + [f"{k}={json.dumps(v)}" for k, v in SWITCHES[name].items()],
    )
    assert arm(name).model_dump() == expected.model_dump()
    assert arm(name).model_dump() != a2.model_dump()


def test_arms_share_seed_steps_and_rollout_budget():
    budgets = {
        (
            c.seed,
            c.steps,
            c.optim.lr,
            c.prompts_per_step,
            c.group_size,
            c.rollout.max_tokens,
            c.data.benchmark.synthetic.seed,
        )
        for c in map(arm, ["a2_attnpo", *SWITCHES])
    }
    assert budgets == {(0, 10, 3e-5, 4, 8, 512, 30011)}
    a2 = arm("a2_attnpo")
    assert a2.method.rescaling.curriculum_steps == a2.steps
    assert a2.method.heads.kind == "file" and all(arm(n).log_rescaled for n in ["a2_attnpo", *SWITCHES])


def test_arms_are_evaluated_on_the_starting_models_problems():
    """launch.sh start runs `synth evaluate data.count=300`: the evaluation defaults on 300 problems."""
    start = load_config(EvaluationConfig, None, ["data.count=300"])
    for name in ["a2_attnpo", *SWITCHES]:
        evaluation = arm(name).evaluation
        assert evaluation.testbed.model_dump() == start.model_dump()
        assert evaluation.baseline == "runs/attnpo/testbed/start/evaluation.json"
    assert start.data.count == 300 and start.data.seed == EvaluationConfig().data.seed


def test_launch_refuses_an_unknown_arm():
    done = subprocess.run(["bash", str(FOLDER / "launch.sh"), "a9"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: no arm 'a9' in {FOLDER} (start, a1..a8, report)"]


def evaluation(accuracy: float, thinking: float) -> dict:
    return {
        "problems": 4,
        "accuracy": accuracy,
        "well_formed": 1.0,
        "redundancy_ratio": 0.25,
        "mean_thinking_tokens": thinking,
        "mean_completion_tokens": thinking + 20,
        "truncated": 0.0,
        "accuracy_by_difficulty": {},
    }


def write_arm(root: Path, name: str, verdicts: list[bool], thinking: float, metrics: list[dict]) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "evaluation.json").write_text(json.dumps(evaluation(sum(verdicts) / len(verdicts), thinking)))
    (folder / "evaluation.rollouts.jsonl").write_text(
        "".join(json.dumps({"problem_id": f"p{i}", "correct": c}) + "\n" for i, c in enumerate(verdicts))
    )
    if metrics:
        lines = "".join(json.dumps(m) + "\n" for m in metrics)
        (folder / "metrics.jsonl").write_text(lines + '{"step": 9, "attnpo/acc')  # a kill cut the last line


def rescaled_rows() -> tuple[list[dict], list[tuple[str, float, float]], list[str]]:
    """Logged responses whose steps are generated testbed steps (the oracle agrees with the generator's
    labels on them): Pos-Adv on the even steps k with γ = 0.5 - 0.01 k, Neg-Adv on step 1. Returns the rows,
    (generator label, relative position, γ) of each Pos-attenuated step, and the labels of the Neg-zeroed
    steps."""
    examples = generate_examples(
        SyntheticConfig(count=8, seed=5, problem={"difficulty": (2, 3)}, trace={"redundancy": (0.3, 0.6)})
    )
    rows, pos, neg = [], [], []
    for i, e in enumerate(examples):
        texts = [step.text for step in e.trace.steps]
        row = {
            "step": 1 + i % 2, "rank": 0, "row": i, "problem_id": e.id, "problem": e.problem.text,
            "gold": str(e.problem.answer), "accuracy": 0.5, "advantage": 0.1, "baseline": 0.01,
            "steps": [
                {"text": t, "score": 0.005, "gamma": 0.5 - 0.01 * k if k % 2 == 0 else 1.0, "pos": k % 2 == 0, "neg": k == 1}
                for k, t in enumerate(texts)
            ],
            "answer": e.trace.answer,
        }  # fmt: skip
        if oracle_labels(row) != e.labels:
            continue
        rows.append(row)
        pos += [(e.labels[k], (k + 0.5) / len(texts), 0.5 - 0.01 * k) for k in range(0, len(texts), 2)]
        neg.append(e.labels[1])
    assert len(rows) >= 4
    return rows, pos, neg


def test_report_table_and_curves(tmp_path):
    root = tmp_path / "exp"
    write_arm(root, "start", [True, False, False, True], 200.0, [])
    write_arm(
        root,
        "a1_traineff",
        [True, True, False, True],
        160.0,
        [{"step": s, "attnpo/thinking_tokens": 200.0 - 10 * s, "attnpo/accuracy": 0.5} for s in (1, 2)],
    )
    write_arm(
        root,
        "a2_attnpo",
        [True, True, True, False],
        120.0,
        [{"step": s, "attnpo/thinking_tokens": 200.0 - 20 * s, "attnpo/accuracy": 0.75} for s in (1, 2, 3)],
    )
    rows, pos, neg = rescaled_rows()
    log = root / "a2_attnpo" / "rescaled" / "rank-0.jsonl"
    log.parent.mkdir()
    stale = {**rows[0], "steps": [{**s, "pos": True} for s in rows[0]["steps"]]}  # before a resume
    lines = [json.dumps(stale)] + [json.dumps(r) for r in rows]
    log.write_text("\n".join(lines) + '\n{"step": 3, "ra')  # the resumed run logged step 1 again; a cut line
    (root / "notes").mkdir()  # not an arm: neither evaluated nor trained

    table, curves = write_report(root, tmp_path / "report")
    lines = [line for line in table.splitlines()[2:] if line.startswith("| ")]
    rows_ = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines}
    assert list(rows_) == ["a1_traineff", "a2_attnpo", "start"]
    assert table.splitlines()[0].startswith(
        "| arm | steps | accuracy [95% CI] | only a1_traineff / only arm (McNemar p) | mean thinking tokens"
        " | thinking vs"
    )
    ci = mean_interval([1.0, 1.0, 1.0, 0.0])
    a2 = rows_["a2_attnpo"]
    assert a2[1:3] == ["3", f"75.0% [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"]
    # paired on p0..p3 against A1 (T T F T): A2 (T T T F) solved p2 alone and lost p3, the start
    # (T F F T) lost p1; exact McNemar 2 * C(2,0..1) / 4 and 2 * C(1,0) / 2, capped at 1
    assert a2[3] == "1 / 1 (p = 1.000)" and rows_["start"][3] == "1 / 0 (p = 1.000)"
    assert rows_["a1_traineff"][3] == "—" and a2[4] == "120.0"
    assert a2[5] == "-25.0%" and rows_["start"][5] == "+25.0%" and rows_["a1_traineff"][5] == "+0.0%"
    redundant = sum(label == "redundant" for label, _, _ in pos) / len(pos)
    where = sum(w for _, w, _ in pos) / len(pos)
    gamma = {
        label: sum(g for lab, _, g in pos if lab == label) / sum(lab == label for lab, _, _ in pos)
        for label in ("redundant", "essential")
    }
    assert gamma["redundant"] != gamma["essential"]  # the steps' γ differ, so a swap would show
    essential = sum(label == "essential" for label in neg) / len(neg)
    assert a2[8:12] == [
        f"{100 * redundant:.1f}%",
        f"{where:.3f}",
        f"{gamma['redundant']:.3f} / {gamma['essential']:.3f}",
        f"{100 * essential:.1f}% |",
    ]
    assert rows_["a1_traineff"][8:12] == ["—", "—", "—", "— |"] and rows_["start"][1] == "—"
    assert f"a2_attnpo {len(pos)} / {len(neg)}" in table
    assert curves == tmp_path / "report" / "curves.png" and curves.stat().st_size > 10_000
    assert (tmp_path / "report" / "positions.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [a["arm"] for a in saved] == ["a1_traineff", "a2_attnpo", "start"]
    assert saved[1]["accuracy"]["mean"] == pytest.approx(0.75)
    assert len(read_metrics(root / "a2_attnpo" / "metrics.jsonl")) == 3


def test_view_shows_the_response_with_most_attenuated_steps():
    rows, _, _ = rescaled_rows()
    kept = [{**r, "steps": [{**st, "pos": False, "neg": False} for st in r["steps"]]} for r in rows]
    kept[2] = rows[2]  # the only response with attenuated steps
    assert pick_response(kept) is rows[2]
    assert pick_response(kept, step=rows[2]["step"]) is rows[2]
    with pytest.raises(UserError, match="no rescaled response was logged at step 99"):
        pick_response(kept, step=99)
    page = render_response(rows[2])
    labels = oracle_labels(rows[2])
    steps = rows[2]["steps"]
    assert page.count('<div class="step') == len(steps) and page.count('class="step neg"') == 1
    assert page.count("(Pos-Adv)") == sum(st["pos"] for st in steps) == (len(steps) + 1) // 2
    assert (
        f'step 1/{len(steps)} · γ = 0.500 (Pos-Adv) · S/S_base = 0.50 · oracle: <span class="{labels[0]}">'
        in page
    )
    assert html.escape(rows[2]["problem"]) in page and html.escape(steps[-1]["text"]) in page
