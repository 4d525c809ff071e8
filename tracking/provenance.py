"""Where a run's files came from: git state, environment, file digests, provenance sidecars.

``provenance.json`` in a folder lists every command that wrote files there (command line,
working directory, UTC time, file names); ``tracking.inventory`` reads them back.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from tracking.files import atomic_write_json

PROVENANCE_FILE = "provenance.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def command_line(prog: str, argv: list[str] | None) -> list[str]:
    """The command as typed: ``prog`` and its arguments (sys.argv's when argv is None)."""
    return [prog, *(sys.argv[1:] if argv is None else argv)]


def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the checkout holding this code; ("unknown", False) outside git."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, capture_output=True, text=True, timeout=10,
                                check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def device_name(device: str) -> str:
    """The GPU's name on cuda, else the CPU's model and core count."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment_tags(device: str, seed: int, command: list[str]) -> dict[str, str]:
    """Tags every run carries: code version, library versions, device, seed, command."""
    import torch

    commit, dirty = git_state()
    return {
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda or "none"),
        "device": device,
        "device_name": device_name(device),
        "seed": str(seed),
        "command_line": shlex.join(command),
        "python_version": platform.python_version(),
    }


def numerics_tags() -> dict[str, str]:
    """The settings that change float results between otherwise equal runs: cuDNN version
    and flags, TF32 and float32 matmul precision, deterministic algorithms, and the GPUs
    (count, names, driver). Read when the run starts training, after the Trainer set them."""
    import torch

    cuda = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if cuda else []
    cudnn = torch.backends.cudnn
    return {
        # cudnn.version() loads the cuDNN library (~70 ms): only where a GPU can use it
        "numerics.cudnn_version": str(cudnn.version()) if cuda and cudnn.is_available()
        else "none",
        "numerics.cudnn_benchmark": str(cudnn.benchmark).lower(),
        "numerics.cudnn_deterministic": str(cudnn.deterministic).lower(),
        "numerics.cudnn_allow_tf32": str(cudnn.allow_tf32).lower(),
        "numerics.cuda_matmul_allow_tf32": str(torch.backends.cuda.matmul.allow_tf32).lower(),
        "numerics.float32_matmul_precision": torch.get_float32_matmul_precision(),
        "numerics.deterministic_algorithms": str(
            torch.are_deterministic_algorithms_enabled()).lower(),
        "gpu.count": str(len(names)),
        "gpu.names": "; ".join(names) or "none",
        "gpu.driver": _nvidia_driver() if cuda else "none",
    }


def _nvidia_driver() -> str:
    """The NVIDIA driver version (nvidia-ml-py), or "unknown"."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - no NVML, no driver: say so, never fail a run
        return "unknown"


def record_provenance(folder: str | Path, command: list[str], files: list[str | Path]) -> Path:
    """Append what a command wrote into ``folder`` to its provenance.json sidecar."""
    folder = Path(folder)
    path = folder / PROVENANCE_FILE
    entries = json.loads(path.read_text()) if path.is_file() else []
    names = sorted({str(Path(f).resolve().relative_to(folder.resolve()))
                    for f in files if Path(f).is_file()
                    and Path(f).resolve().is_relative_to(folder.resolve())})
    entries.append({
        "command": shlex.join(command),
        "cwd": str(Path.cwd()),
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "files": names,
    })
    atomic_write_json(path, entries)
    return path
