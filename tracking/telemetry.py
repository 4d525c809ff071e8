"""Lightning callback: what the hardware did during training, as metrics of the run.

Per epoch (step = the epoch's last global step): ``perf/epoch_seconds``,
``perf/groups_per_second`` (training groups seen / epoch wall time) and
``perf/peak_device_memory_mb`` (``torch.cuda.max_memory_allocated`` on a GPU, reset every
epoch) or ``perf/peak_host_rss_mb`` (the process's peak resident memory) on the CPU. At the
start of training: the numerics tags (``tracking.provenance.numerics_tags``). Nothing is
done per step: an epoch's timing synchronizes the device once.
"""

from __future__ import annotations

import resource
import time

import lightning as L
import torch

from tracking.provenance import numerics_tags


class RunTelemetryCallback(L.Callback):
    """Feeds ``run`` (a :class:`tracking.run.TrackedRun`) per-epoch timing and memory."""

    def __init__(self, run):
        self.run = run
        self._started = 0.0
        self._groups = 0

    def on_fit_start(self, trainer, pl_module):
        if trainer.global_rank == 0:
            self.run.set_tags(numerics_tags())

    def on_train_epoch_start(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._groups = 0
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._groups += int(batch["diffraction"].shape[0])

    def on_train_epoch_end(self, trainer, pl_module):
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - self._started
        metrics = {"perf/epoch_seconds": seconds,
                   "perf/groups_per_second": self._groups / max(seconds, 1e-9)}
        if device.type == "cuda":
            metrics["perf/peak_device_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        else:  # ru_maxrss is KiB on Linux
            metrics["perf/peak_host_rss_mb"] = resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024
        if trainer.global_rank == 0:
            self.run.log_metrics(metrics, step=trainer.global_step)
