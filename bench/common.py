"""What every benchmark shares: device sync and naming, timing, the results folder, writing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def sync(device: str) -> None:
    """Wait for queued device work, so a wall-clock reading covers it (a no-op on CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(device: str, call: Callable[[], T]) -> tuple[T, float]:
    """``call()``'s result and its wall time in seconds, the device synchronized on both
    sides so queued kernels count to the call that queued them."""
    sync(device)
    started = time.perf_counter()
    result = call()
    sync(device)
    return result, time.perf_counter() - started


def device_name(device: str) -> str:
    """The GPU's name on cuda; on CPU the processor and cores (as tracking tags runs) and
    torch's thread count, which sets CPU timings."""
    import torch

    from tracking.provenance import device_name as machine_name

    if device == "cuda":
        return machine_name(device)
    return f"{machine_name(device)}, {torch.get_num_threads()} torch thread(s)"


def today() -> str:
    """The date stamp of result file names: YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d")


def results_dir() -> Path:
    """bench/results of this checkout: the default folder for result files."""
    return Path(__file__).resolve().parent / "results"


def write_results(stem: Path, payload, markdown: str) -> None:
    """``stem``.json (``payload``, JSON-able) and ``stem``.md, each written atomically;
    the folder is created when missing."""
    from tracking.files import atomic_write_json, atomic_write_text

    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stem.with_suffix(".json"), payload)
    atomic_write_text(stem.with_suffix(".md"), markdown)
