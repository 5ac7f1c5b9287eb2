"""AttnPO: key-focus heads and attention-guided advantage rescaling for RL against overthinking."""

__version__ = "0.1.0"
