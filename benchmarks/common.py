"""What every benchmark records besides its numbers: the machine, and where the JSON goes."""

import json
import os
import platform
from pathlib import Path

import torch


def machine() -> dict:
    """The machine a result was measured on; the load average says how noisy it was."""
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
    }


def write_report(report: dict, out: Path, smoke_test: bool) -> None:
    """Write the JSON (committed under benchmarks/results/), unless this is a smoke test."""
    if smoke_test:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def status_kib(key: str) -> int:
    """A memory line of /proc/self/status in KiB (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise ValueError(f"/proc/self/status has no {key}")


def reset_peak() -> int:
    """Reset the peak RSS (VmHWM := VmRSS, `5 > /proc/self/clear_refs`); the RSS now, in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")
