"""AttnPO: key-focus heads and attention-guided advantage rescaling for RL against overthinking."""

from attncore.lazy import lazy_exports

__version__ = "0.1.0"

# Public names -> the module defining each, imported on first use (as in `attncore`); filled as the
# package grows.
_EXPORTS: dict[str, str] = {
    "FindHeadsConfig": "attnpo.find_heads",
    "run_find_heads": "attnpo.find_heads",
    "HeadsArtifact": "attnpo.artifact",
    "read_artifact": "attnpo.artifact",
    "read_heads": "attnpo.artifact",
    "LabelledResponse": "attnpo.selection",
    "head_table": "attnpo.selection",
    "eligible_heads": "attnpo.selection",
    "ensemble_sra": "attnpo.selection",
    "top_k_curve": "attnpo.selection",
    "greedy_curve": "attnpo.selection",
    "ProbeResponse": "attnpo.labels",
    "label_source": "attnpo.labels",
    "causal_check": "attnpo.causal",
    "sra_stability": "attnpo.stability",
    "MethodConfig": "attnpo.config",
    "RescalingConfig": "attnpo.config",
    "AdvantageConfig": "attnpo.config",
    "HeadsConfig": "attnpo.config",
    "group_rewards": "attnpo.rewards",
    "outcome_advantages": "attnpo.advantages",
    "rloo_advantages": "attnpo.advantages",
    "rescale_advantages": "attnpo.rescaling",
    "RescaledAdvantages": "attnpo.rescaling",
    "AttnPOTrainer": "attnpo.trainer",
    "rescaling_metrics": "attnpo.step_metrics",
    "TrainConfig": "attnpo.train",
    "run_train": "attnpo.train",
    "VLLMRolloutConfig": "attnpo.vllm_rollout",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
