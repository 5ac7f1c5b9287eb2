"""Peak resident memory of one step, for the benchmarks' measurement children (Linux only).

Each benchmark runs a mode in a fresh process so that its peak is its own; inside it, the kernel's
peak-RSS counter (VmHWM) is reset by writing 5 to /proc/self/clear_refs just before the measured step,
so the warm-up and model loading before it do not count.
"""

from __future__ import annotations

from collections.abc import Callable


def status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status, e.g. VmRSS or VmHWM."""
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def step_memory(step: Callable[[], object]) -> dict[str, float]:
    """Run `step` once: the peak RSS during it, the RSS just before it, and the step's own increase
    (`peak_mib`, `loaded_mib`, `step_mib`)."""
    loaded = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    step()
    peak = status_kib("VmHWM")
    return {"peak_mib": peak / 1024, "loaded_mib": loaded / 1024, "step_mib": (peak - loaded) / 1024}
