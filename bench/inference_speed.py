"""Inference throughput (forward + stitching) and its peak working memory, per scan size.

Gridsize 1, N 64, a raster scan of synthetic patterns. Memory is the rise of peak host RSS
(and on CUDA of peak allocated device memory) over what was resident before the call, input
scan and model included there. Streaming in batches keeps that rise flat apart from the
stitching canvas, which grows with the scanned area (reported beside it).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch

from bench.common import sync, timed

STITCH_CROP_PX = 20


def proc_status_kib(field: str) -> float | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in KiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def reset_host_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def raster_scan(n: int, probe: np.ndarray):
    """(GroupedScan of ``n`` random patterns of the probe's size (64 px here) on a 7 px
    raster, one per group, canvas shape, canvas origin)."""
    from ptycho_torch.data import GroupedScan, ScanData
    from ptycho_torch.reassembly import canvas_frame

    side = int(np.ceil(np.sqrt(n)))
    gy, gx = np.meshgrid(np.arange(side) * 7.0 + 40, np.arange(side) * 7.0 + 40, indexing="ij")
    x, y = gx.ravel()[:n], gy.ravel()[:n]
    rng = np.random.default_rng(0)
    size = probe.shape[-1]
    scan = ScanData(Path("synthetic"), rng.random((n, size, size), dtype=np.float32), probe,
                    x, y, x, y, np.zeros(n, dtype=np.int64), None, {})
    shape, origin = canvas_frame(np.stack([x, y], 1), size)
    return GroupedScan(scan, np.arange(n)[:, None], 1.0), shape, origin


def measure_peaks(device: str, call) -> tuple[float, float | None, float | None]:
    """Run ``call()`` once: (seconds, peak host RSS rise MiB or None where the peak cannot be
    reset, peak allocated device memory rise MiB on CUDA else None)."""
    sync(device)
    rss_before = proc_status_kib("VmRSS")
    can_reset = reset_host_peak()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    _, seconds = timed(device, call)
    host_peak = device_peak = None
    if can_reset and rss_before is not None:
        host_peak = (proc_status_kib("VmHWM") - rss_before) / 1024
    if device == "cuda":
        device_peak = (torch.cuda.max_memory_allocated() - allocated_before) / 2**20
    return seconds, host_peak, device_peak


def bench_inference(device: str, sizes: list[int], repeats: int,
                    batch_size: int = 512) -> list[dict]:
    """One row per scan size: median seconds of predict_and_stitch over ``repeats`` calls,
    patterns/s, and the peak memory rise of the first call."""
    from ptycho_torch.config import ModelConfig
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.simulate import make_probe
    from ptycho_torch.workflows import predict_and_stitch

    probe = make_probe(64)
    model = PtychoPINN(ModelConfig(patch_size_px=64, n_channels=1), torch.from_numpy(probe))
    model = model.to(device).eval()
    rows = []
    for n in sizes:
        grouped, shape, origin = raster_scan(n, probe)

        def call(grouped=grouped, shape=shape, origin=origin):
            with torch.inference_mode():
                predict_and_stitch(model, grouped, shape, origin, device, batch_size,
                                   STITCH_CROP_PX, progress=False)

        first, host_peak, device_peak = measure_peaks(device, call)
        median = statistics.median([first, *(timed(device, call)[1]
                                             for _ in range(repeats - 1))])
        rows.append({"patterns": n, "seconds": median, "patterns_per_s": n / median,
                     "seconds_per_1k": 1e3 * median / n, "repeats": repeats,
                     "batch_size": batch_size, "input_mib": grouped.diffraction.nbytes / 2**20,
                     "canvas_px": list(shape),
                     "canvas_mib": shape[0] * shape[1] * (8 + 4) / 2**20,
                     "peak_host_rise_mib": host_peak, "peak_device_rise_mib": device_peak})
    return rows
