"""Where a benchmark ran: the command line, the machine, the library versions, the code, and memory readings."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import REPO


def command_line() -> str:
    """This invocation as a shell command (the script path as given, then its arguments)."""
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix()] + sys.argv[1:])


def machine_info() -> dict:
    """CPU, cores, memory and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "platform": platform.platform()}
    for module in ("torch", "transformers", "peft", "datasets"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing library is reported, not fatal
            info[module] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    return info


def code_fingerprint(package: Path = REPO / "hidlr_hf") -> dict:
    """Which library code a run used: a hash of the package's Python sources (paths and bytes), and the git commit
    when there is one. Runs of different engine versions must not be compared silently; the report checks this."""
    digest = hashlib.sha256()
    for path in sorted(Path(package).rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=str(REPO), capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"hidlr_hf_sha256": digest.hexdigest()[:16], "git_commit": commit}


def code_versions(runs: list[dict]) -> dict:
    """Finished runs of the Hi-DLR engine per hidlr_hf source hash ("unrecorded" for runs made before runs recorded
    it). Runs of other methods (AdamW, GeN, Prodigy, schedule-free, LoRA) are left out: an engine change does not
    touch them, so their hash says nothing about whether they may be compared."""
    out: dict = {}
    for run in runs:
        if "error" not in run and (run.get("spec") or {}).get("kind") == "hidlr":
            key = (run.get("code") or {}).get("hidlr_hf_sha256") or "unrecorded"
            out[key] = out.get(key, 0) + 1
    return out


def cpu_clock() -> dict:
    """A reading of the machine's busy CPU seconds (``/proc/stat``, all cores), this process's CPU seconds and the wall
    clock; two readings give :func:`other_cpu_load`."""
    busy = None
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"busy": busy, "own": own.ru_utime + own.ru_stime, "wall": time.perf_counter()}


def other_cpu_load(start: dict, end: dict) -> float | None:
    """Cores kept busy by everything but this process between two :func:`cpu_clock` readings, on average (0 on an
    otherwise idle machine; 1 means another process held a whole core throughout)."""
    wall = end["wall"] - start["wall"]
    if start["busy"] is None or end["busy"] is None or wall <= 0:
        return None
    return max(0.0, ((end["busy"] - start["busy"]) - (end["own"] - start["own"])) / wall)


def reset_peak_rss() -> str:
    """Reset the process's resident-set high-water mark (Linux ``clear_refs``); returns how peaks are measured."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return "VmHWM after resetting it (/proc/self/clear_refs) just before training"
    except OSError:
        return "ru_maxrss of the whole process (could not reset the high-water mark)"


def rss_mb(kind: str = "VmRSS") -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB; falls back to ``ru_maxrss`` for the peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if kind == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None
