"""MoLSAKI: Mixture-of-Layers distillation of a teacher's stepwise attention on key information."""

from attncore.lazy import lazy_exports

__version__ = "0.1.0"

# Public names -> the module defining each, imported on first use (as in `attncore`); filled as the
# package grows.
_EXPORTS: dict[str, str] = {}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
