"""MoLSAKI: Mixture-of-Layers distillation of a teacher's stepwise attention on key information."""

__version__ = "0.1.0"
