"""The curated, lazily imported surfaces of attncore, attnpo and cotattn."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

PACKAGES = ("attncore", "attnpo", "cotattn")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_its_defining_object(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == sorted(set(module.__all__)), "sorted, no repeats"
    for name in module.__all__:
        value = getattr(module, name)
        source = importlib.import_module(module._EXPORTS[name])
        assert value is getattr(source, name), name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_the_surface_covers_the_library_tasks() -> None:
    import attncore

    tasks = {"load_model", "segment_response", "AttentionCapture", "step_scores", "Grader", "run_rollouts"}
    assert tasks | {"run_suite"} <= set(attncore.__all__)


def _modules_after(statement: str) -> set[str]:
    """Modules loaded by a fresh interpreter after running `statement`."""
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_importing_the_packages_loads_no_torch() -> None:
    loaded = _modules_after("import attncore, attnpo, cotattn")
    assert not {"torch", "transformers", "pyarrow"} & loaded


def test_models_do_not_import_the_testbed() -> None:
    loaded = _modules_after("import attncore.models")
    assert not {m for m in loaded if m.startswith("attncore.synthetic")}
