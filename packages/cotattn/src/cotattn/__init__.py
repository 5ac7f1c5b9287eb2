"""MoLSAKI: Mixture-of-Layers distillation of a teacher's stepwise attention on key information."""

from attncore.lazy import lazy_exports

__version__ = "0.1.0"

# Public names -> the module defining each, imported on first use (as in `attncore`); filled as the
# package grows.
_EXPORTS: dict[str, str] = {
    "mix_layers": "cotattn.layer_mix",
    "single_layer_weights": "cotattn.layer_mix",
    "column_difference": "cotattn.teacher_mix",
    "teacher_layer_weights": "cotattn.teacher_mix",
    "teacher_target": "cotattn.teacher_mix",
    "TeacherTarget": "cotattn.teacher_mix",
    "MoLRouter": "cotattn.router",
    "stepwise_kl": "cotattn.attention_loss",
    "mmi_loss": "cotattn.mmi",
    "combined_loss": "cotattn.objective",
    "has_attention_loss": "cotattn.objective",
    "Losses": "cotattn.objective",
    "TaskFormat": "cotattn.text",
    "StudentExample": "cotattn.text",
    "student_example": "cotattn.text",
    "rules_hash": "cotattn.text",
    "TeacherTargetsConfig": "cotattn.config",
    "run_teacher_targets": "cotattn.teacher_targets",
    "TeacherTargets": "cotattn.teacher_targets",
    "ArmConfig": "cotattn.config",
    "TrainConfig": "cotattn.config",
    "run_training": "cotattn.train",
    "DistillTrainer": "cotattn.trainer",
    "TrainItem": "cotattn.batch",
    "collate": "cotattn.batch",
    "RationalesConfig": "cotattn.config",
    "run_rationales": "cotattn.rationales",
    "parse_keywords": "cotattn.rationales",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
