"""attncore: the attention engine and shared tooling behind AttnPO and MoLSAKI, as a library.

The names below are imported lazily (`import attncore` loads neither torch nor transformers):

    import attncore
    loaded = attncore.load_model("smollm2-135m-instruct")
    steps = attncore.segment_response(loaded.tokenizer, response_ids)

Load a model, segment a response, capture and score attention, grade, generate rollouts, run an eval.
"""

from attncore.lazy import lazy_exports

_EXPORTS = {
    # models and data
    "LoadedModel": "attncore.models",
    "ModelConfig": "attncore.models",
    "load_model": "attncore.models",
    "make_tiny_model": "attncore.tiny",
    "DataConfig": "attncore.data",
    "Problem": "attncore.data",
    "load_problems": "attncore.data",
    "read_rows": "attncore.data",
    "PromptConfig": "attncore.prompts",
    "encode_prompt": "attncore.prompts",
    "load_config": "attncore.config",
    "UserError": "attncore.errors",
    # thinking, steps, critical units
    "THINK_CLOSE": "attncore.think",
    "THINK_OPEN": "attncore.think",
    "split_thinking": "attncore.think",
    "thinking_token_count": "attncore.think",
    "SegmentedResponse": "attncore.steps",
    "StepSegmenterConfig": "attncore.steps",
    "segment_response": "attncore.steps",
    "segment_thinking": "attncore.steps",
    "unscored_reason": "attncore.steps",
    "sentence_spans": "attncore.steps",
    "encode_text": "attncore.alignment",
    "token_char_ends": "attncore.alignment",
    "CriticalConfig": "attncore.critical",
    "find_critical_units": "attncore.critical",
    # attention capture and scores
    "AttentionCapture": "attncore.attention",
    "HeadMeanBlocks": "attncore.attention",
    "HeadMeanGroups": "attncore.attention",
    "HeadGroups": "attncore.attention",
    "HeadRows": "attncore.attention",
    "StepwiseGrad": "attncore.attention_grad",
    "StepwiseGradCapture": "attncore.attention_grad",
    "StepScores": "attncore.scores",
    "TextLayout": "attncore.scores",
    "arm_step_scores": "attncore.scores",
    "arm_stepwise_matrices": "attncore.scores",
    "batch_step_scores": "attncore.scores",
    "batch_stepwise_matrices": "attncore.scores",
    "pad_batch": "attncore.padding",
    "step_scores": "attncore.aggregate",
    "step_scores_per_head": "attncore.aggregate",
    "stepwise_attention": "attncore.aggregate",
    "step_ranking_accuracy": "attncore.ranking",
    "AttentionStore": "attncore.store.store",
    "ExtractConfig": "attncore.store.config",
    "run_extraction": "attncore.store.extract",
    "teacher_forced_response": "attncore.store.inputs",
    # grading
    "GradeResult": "attncore.grading",
    "Grader": "attncore.grading",
    "GradingMode": "attncore.grading",
    "extract_boxed": "attncore.grading",
    "grade_answers": "attncore.grading",
    "grade_response": "attncore.grading.rules",
    # rollouts and evaluation
    "Engine": "attncore.rollout.engine",
    "HFEngine": "attncore.rollout.hf",
    "Rollout": "attncore.rollout.types",
    "RolloutJobConfig": "attncore.rollout.job",
    "RolloutStore": "attncore.rollout.store",
    "SamplingConfig": "attncore.rollout.types",
    "build_engine": "attncore.rollout.job",
    "run_rollouts": "attncore.rollout.job",
    "SuiteConfig": "attncore.eval.config",
    "run_suite": "attncore.eval.suite",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
