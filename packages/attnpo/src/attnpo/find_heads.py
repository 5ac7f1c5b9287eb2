"""`attnpo find-heads`: discover a model's key-focus heads (attnpo-spec §5) end to end.

Probe rollouts (sampled or given) -> AttnPO segmentation -> step labels (oracle, LLM judges or a file)
-> step scores of every (layer, query head) from the answer rows, one shard per batch -> SRA per head
with bootstrap intervals and the pair-direction split -> eligibility and top-k / greedy ensembles ->
the heads artifact, heatmap, curve and report. Every stage keeps what it finished on disk, so a killed
run continues where it stopped; a folder holding another configuration's work is refused.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from tqdm.auto import tqdm

from attncore.config import Config, OutputPath, Threads, save_resolved
from attncore.data import write_jsonl
from attncore.errors import UserError
from attncore.grading import extract_boxed
from attncore.models import (
    LoadedModel,
    ModelConfig,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_model_source,
)
from attncore.rollout.grade import resolve_grading_mode
from attncore.shards import write_json_atomic
from attncore.steps import StepSegmenterConfig
from attncore.synthetic.rankers import TRIVIAL_RANKERS
from attncore.synthetic.rankers import LabelledResponse as TextResponse
from attncore.tracking import Tracker, TrackingConfig
from attnpo.artifact import HeadEntry, HeadsArtifact, write_artifact
from attnpo.causal import CausalConfig, CausalResult, causal_check
from attnpo.head_scores import HeadScoreStore, score_probe
from attnpo.heads_report import markdown_report, plot_curves, plot_heatmap
from attnpo.labels import ESSENTIAL, REDUNDANT, LabelsConfig, OracleLabelsConfig, label_source
from attnpo.probe import ProbeConfig, ProbeItem, probe_hash, probe_items, read_rollouts, sample_probe_rollouts
from attnpo.selection import (
    Ensemble,
    LabelledResponse,
    RankerSummary,
    eligible_heads,
    ensemble_scores,
    greedy_curve,
    head_table,
    summarise_ranker,
    top_k_curve,
)

HEADS_NAME = "heads.yaml"
REPORT_NAME = "report.md"
TABLE_NAME = "sra.json"
LABELS_NAME = "labels.jsonl"


class ScoringConfig(Config):
    """The all-heads scoring forwards."""

    batch_size: int = Field(4, ge=1, description="sequences per forward, grouped by length")
    max_batch_tokens: int | None = Field(None, ge=1, description="cap on padded tokens per forward")
    capture_mb: int = Field(
        256, ge=1, description="working memory for attention probabilities, in MiB (chunks of heads and rows)"
    )


class SRAConfig(Config):
    """Bootstrap interval over responses."""

    bootstrap_samples: int = Field(1000, ge=1)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = 0


class SelectionConfig(Config):
    """Which ensemble becomes the heads artifact, and the rule that keeps position heads out."""

    method: Literal["greedy", "top_k"] = "greedy"
    k: int = Field(3, ge=1, le=10, description="heads in the artifact (the release uses 3)")
    k_max: int = Field(10, ge=1, description="longest ensemble on the curves")
    min_direction_sra: float = Field(
        0.6, ge=0.0, le=1.0, description="a head needs this SRA in each pair direction to be eligible"
    )


class FindHeadsConfig(Config):
    """Everything a discovery run depends on; saved resolved beside its outputs."""

    model: ModelConfig = ModelConfig()
    probe: ProbeConfig
    segmenter: StepSegmenterConfig = StepSegmenterConfig()
    labels: LabelsConfig = Field(default_factory=OracleLabelsConfig)
    scoring: ScoringConfig = ScoringConfig()
    sra: SRAConfig = SRAConfig()
    selection: SelectionConfig = SelectionConfig()
    causal: CausalConfig = CausalConfig()
    out: OutputPath = "runs/heads"
    overwrite: bool = False
    threads: Threads = None
    tracking: TrackingConfig = TrackingConfig()


def labelled_responses(items, labels, scores) -> list[LabelledResponse]:
    """Responses with their all-heads scores (float64) and label masks, in probe order."""
    out = []
    for item, labs in zip(items, labels, strict=True):
        rid = item.rollout.rollout_id
        if rid in scores:
            essential = torch.tensor([x == ESSENTIAL for x in labs])
            redundant = torch.tensor([x == REDUNDANT for x in labs])
            out.append(LabelledResponse(rid, scores[rid].to(torch.float64), essential, redundant))
    return out


def has_pair(labels) -> bool:
    return ESSENTIAL in labels and REDUNDANT in labels


def _model_meta(cfg: ModelConfig) -> dict:
    return cfg.model_dump(exclude={"device", "attn_implementation"})


def _head_dicts(table, eligible) -> dict:
    def listed(t):
        return [[None if v != v else round(float(v), 6) for v in row] for row in t.tolist()]

    return {
        "sra": listed(table.sra),
        "low": listed(table.low),
        "high": listed(table.high),
        "sra_after": listed(table.by_direction["after"]),
        "sra_before": listed(table.by_direction["before"]),
        "eligible": eligible.tolist(),
        "responses": table.responses,
        "pairs": table.pairs,
    }


def _curve(curve: list[Ensemble]) -> list[dict]:
    return [{"k": e.k, "heads": [list(h) for h in e.heads], "sra": e.sra} for e in curve]


class LazyModel:
    """The HF model of a run, loaded on first use: sampling with the HF engine shares it, while vLLM
    sampling and judges run before it takes GPU memory; segmentation needs only the tokenizer."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)})
        self.loaded: LoadedModel | None = None

    def get(self) -> LoadedModel:
        if self.loaded is None:
            self.loaded = load_model(self.cfg)
        return self.loaded

    def tokenizer(self):
        if self.loaded is not None:
            return self.loaded.tokenizer
        return load_tokenizer(resolve_model_source(self.cfg.name)[0], self.cfg.revision)


@dataclass
class FindHeadsResult:
    """Where the outputs are and the headline numbers."""

    out: Path
    heads: tuple[tuple[int, int], ...]
    ensemble_sra: float | None
    best_head_sra: float
    responses: int
    scored_now: int
    seconds: float


def run_find_heads(cfg: FindHeadsConfig, progress: bool = True) -> FindHeadsResult:
    """Run discovery into `cfg.out` (resuming what is there) and write the artifact and the report."""
    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if cfg.probe.rollouts is not None and not Path(cfg.probe.rollouts).is_dir():
        raise UserError(f"rollout folder not found: {cfg.probe.rollouts}")
    source = label_source(cfg.labels, out / "judges")  # a labels file is read (and checked) here
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    model = LazyModel(cfg.model)
    folder = sample_probe_rollouts(cfg.probe, cfg.model, out / "rollouts", model.get, progress, cfg.overwrite)
    rollouts, template = read_rollouts(folder)
    items, dropped = probe_items(rollouts, model.tokenizer(), cfg.segmenter, cfg.probe)
    if not items:
        raise UserError(f"no usable probe response in {folder} (left out: {dropped or 'none'})")
    phash = probe_hash(items)
    provenance = source.provenance()
    labels = source.label([item.response for item in items], progress=progress)
    write_jsonl(
        [
            {"id": i.rollout.rollout_id, "labels": list(lab), "source": provenance["kind"]}
            for i, lab in zip(items, labels, strict=True)
        ],
        out / LABELS_NAME,
    )
    write_json_atomic(out / "labels.provenance.json", {"probe_hash": phash, **provenance})
    paired = [item for item, lab in zip(items, labels, strict=True) if has_pair(lab)]
    if not paired:
        raise UserError(
            f"none of the {len(items)} probe responses has both an essential and a redundant step "
            f"under the {provenance['kind']} labels ({out / LABELS_NAME})"
        )
    loaded = model.get()  # after any vLLM sampling and judging, so the GPU holds one model at a time
    store = HeadScoreStore(
        out / "scores",
        {"model": _model_meta(cfg.model), "segmenter": cfg.segmenter.model_dump(mode="json")},
        overwrite=cfg.overwrite,
    )
    tracker = Tracker(cfg.tracking, cfg.model_dump(mode="json"), out, job="find-heads")
    try:
        todo = len({i.rollout.rollout_id for i in paired} - store.done())
        bar = tqdm(total=todo, desc="scoring heads", unit="response", disable=not progress)
        scored_so_far = 0

        def on_batch(n: int) -> None:
            nonlocal scored_so_far
            scored_so_far += n
            bar.update(n)
            tracker.log({"find_heads/scored": scored_so_far})

        scored_now = score_probe(
            loaded,
            paired,
            store,
            cfg.scoring.batch_size,
            cfg.scoring.max_batch_tokens,
            cfg.scoring.capture_mb,
            on_batch,
        )
        bar.close()
        scores = store.read(paired)
        responses = labelled_responses(items, labels, scores)
        result = _select_and_report(cfg, loaded.name, responses, items, phash, provenance, dropped, out)
        if cfg.causal.enabled and result.heads:
            check = run_causal_check(
                cfg, loaded, paired, scores, labels, items, result.heads, template, out, progress
            )
            with (out / REPORT_NAME).open("a") as fh:
                fh.write("\n" + check.markdown() + "\n")
            tracker.summary({f"find_heads/causal_accuracy_{c}": a for c, a in check.accuracy.items()})
        tracker.summary(
            {
                "find_heads/best_head_sra": result.best_head_sra,
                "find_heads/ensemble_sra": result.ensemble_sra,
                "find_heads/responses": len(responses),
                **{
                    f"find_heads/{name}_sra_k{e.k}": e.sra
                    for name, curve in result.curves.items()
                    for e in curve
                },
            }
        )
    finally:
        tracker.finish()
    seconds = time.perf_counter() - start
    summary = FindHeadsResult(
        out, result.heads, result.ensemble_sra, result.best_head_sra, len(responses), scored_now, seconds
    )
    write_json_atomic(out / "summary.json", {**summary.__dict__, "out": str(out)})
    if not result.heads:
        raise UserError(
            f"no head reaches SRA {cfg.selection.min_direction_sra} in each pair direction; "
            f"no heads file written (see {out / REPORT_NAME})"
        )
    return summary


def run_causal_check(
    cfg, loaded, paired, scores, labels, items, heads, template, out, progress
) -> CausalResult:
    """The step-removal check on the correct scored responses, with the selected heads' mean score."""
    index = torch.tensor(heads)
    step_scores = {rid: s[index[:, 0], index[:, 1]].mean(0) for rid, s in scores.items()}
    by_id = {i.rollout.rollout_id: lab for i, lab in zip(items, labels, strict=True)}
    correct = [i for i in paired if i.rollout.extra.get("correct")]
    mode = resolve_grading_mode(cfg.probe.grading.mode, template)
    check = causal_check(
        loaded, correct, step_scores, by_id, cfg.causal, str(mode), out / "causal", cfg.labels.kind, progress
    )
    write_json_atomic(out / "causal.json", check.as_dict())
    return check


@dataclass(frozen=True)
class Selected:
    """What selection decided: the chosen heads (empty when none is eligible) and the headline figures."""

    heads: tuple[tuple[int, int], ...]
    best_head_sra: float
    ensemble_sra: float | None
    curves: dict[str, list[Ensemble]]


def trivial_ranker_scores(
    responses: list[LabelledResponse], items: list[ProbeItem], seed: int
) -> dict[str, list]:
    """Per trivial ranker of the testbed (position, length, mentions the answer, random), its (steps,)
    scores of each scored response; the answer is the response's boxed answer, else the gold."""
    by_id = {i.rollout.rollout_id: i.response for i in items}
    texts = []
    for r in responses:
        probe = by_id[r.id]
        boxed = extract_boxed(probe.answer)
        labels = tuple(
            ESSENTIAL if e else REDUNDANT if d else "unlabelled"
            for e, d in zip(r.essential.tolist(), r.redundant.tolist(), strict=True)
        )
        texts.append(TextResponse(probe.steps, labels, boxed if boxed is not None else probe.gold))
    rng = random.Random(seed)
    return {
        name: [torch.tensor(ranker(t, rng), dtype=torch.float64) for t in texts]
        for name, ranker in TRIVIAL_RANKERS.items()
    }


def headline_rankers(
    responses, items, table, top, greedy, chosen, sra: SRAConfig
) -> dict[str, RankerSummary]:
    """The issue's headline rows: best single head, ensembles at k = 3 and the chosen one, the median head,
    and the trivial rankers, all on the same responses."""

    def summary(scores):
        return summarise_ranker(responses, scores, sra.bootstrap_samples, sra.confidence, sra.seed)

    heads = table.sra.shape[1]
    best = divmod(int(torch.nan_to_num(table.sra, nan=-1.0).reshape(-1).argmax()), heads)
    rows = {f"best single head {best}": summary([r.scores[best] for r in responses])}
    for name, curve in (("greedy", greedy), ("top-k", top)):
        if len(curve) >= 3:
            rows[f"{name} ensemble, k = 3"] = summary(ensemble_scores(responses, curve[2].heads))
    if chosen is not None:
        rows[f"selected ({len(chosen.heads)} heads)"] = summary(ensemble_scores(responses, chosen.heads))
    nan = float("nan")
    rows["median head (per column)"] = RankerSummary(
        float(table.sra.nanmedian()), nan, nan,
        float(table.by_direction["after"].nanmedian()), float(table.by_direction["before"].nanmedian()),
    )  # fmt: skip
    for name, scores in trivial_ranker_scores(responses, items, sra.seed).items():
        rows[f"trivial: {name}"] = summary(scores)
    return rows


def _select_and_report(cfg, model_name, responses, items, phash, provenance, dropped, out) -> Selected:
    """Head table, eligibility, curves, the chosen ensemble; writes sra.json, the plots, report and artifact."""
    sra = cfg.sra
    table = head_table(responses, sra.bootstrap_samples, sra.confidence, sra.seed)
    eligible = eligible_heads(table, cfg.selection.min_direction_sra)
    top = top_k_curve(responses, table, eligible, cfg.selection.k_max)
    greedy = greedy_curve(responses, table, eligible, cfg.selection.k_max)
    curve = greedy if cfg.selection.method == "greedy" else top
    chosen = curve[min(cfg.selection.k, len(curve)) - 1] if curve else None
    headline = headline_rankers(responses, items, table, top, greedy, chosen, sra)
    probe = {"hash": phash, "responses": len(items), "scored": len(responses), "left_out": dropped}
    write_json_atomic(
        out / TABLE_NAME,
        {
            **_head_dicts(table, eligible),
            "top_k": _curve(top),
            "greedy": _curve(greedy),
            "headline": {name: asdict(row) for name, row in headline.items()},
            "probe": probe,
        },
    )
    plot_heatmap(table, eligible, chosen.heads if chosen else (), out / "sra_heatmap.png")
    plot_curves(top, greedy, out / "ensembles.png")
    report = markdown_report(
        model=model_name,
        table=table,
        eligible=eligible,
        top=top,
        greedy=greedy,
        chosen=chosen,
        headline=headline,
        probe=probe,
        labels=provenance,
        min_direction_sra=cfg.selection.min_direction_sra,
    )
    (out / REPORT_NAME).write_text(report)
    best = float(torch.nan_to_num(table.sra, nan=-1.0).max())
    if chosen is None:
        (out / HEADS_NAME).unlink(missing_ok=True)
        return Selected((), best, None, {"top_k": top, "greedy": greedy})
    entries = [
        HeadEntry(
            layer=layer,
            head=head,
            sra=float(table.sra[layer, head]),
            low=float(table.low[layer, head]),
            high=float(table.high[layer, head]),
            sra_after=_num(table.by_direction["after"][layer, head]),
            sra_before=_num(table.by_direction["before"][layer, head]),
        )
        for layer, head in chosen.heads
    ]
    selected = headline[f"selected ({len(chosen.heads)} heads)"]
    artifact = HeadsArtifact(
        model=cfg.model.name,
        revision=cfg.model.revision,
        heads=entries,
        ensemble={
            "method": cfg.selection.method,
            "k": chosen.k,
            "sra": chosen.sra,
            "low": selected.low,
            "high": selected.high,
            "sra_after": _num(selected.after),
            "sra_before": _num(selected.before),
        },
        probe=probe,
        labels=provenance,
        segmenter=cfg.segmenter.model_dump(mode="json"),
        evidence={"selection": cfg.selection.model_dump(mode="json"), "sra": sra.model_dump(mode="json")},
    )
    write_artifact(artifact, out / HEADS_NAME)
    return Selected(chosen.heads, best, chosen.sra, {"top_k": top, "greedy": greedy})


def _num(value) -> float | None:
    value = float(value)
    return None if value != value else value
