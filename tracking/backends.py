"""The pieces of a tracked run that talk to one backend: the Lightning MLflow logger whose
failures never stop training, MLflow's system-metrics monitor, TensorBoard's HParams session
and image helpers. :class:`tracking.run.TrackedRun` puts them together."""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger("tracking.run")


def warn_once(owner, what: str, exc: Exception) -> None:
    if not getattr(owner, "_tracking_warned", False):
        logger.warning("tracking write failed (%s): %s; training goes on and local files are "
                       "kept", what, exc)
        owner._tracking_warned = True
    owner.tracking_failed = True


def safe_mlflow_logger_class():
    from lightning.pytorch.loggers import MLFlowLogger

    class SafeMLFlowLogger(MLFlowLogger):
        """MLFlowLogger whose writes never stop training: failures are reported once."""

        tracking_failed = False

        def log_metrics(self, metrics, step=None):
            try:
                super().log_metrics(metrics, step)
            except Exception as exc:  # noqa: BLE001 - any backend failure
                warn_once(self, "metrics", exc)

        def log_hyperparams(self, params):
            try:
                super().log_hyperparams(params)
            except Exception as exc:  # noqa: BLE001
                warn_once(self, "params", exc)

        def finalize(self, status="success"):
            # TrackedRun ends the run once its artifacts are up: a run never shows FINISHED
            # while its files are still being uploaded.
            return None

        def after_save_checkpoint(self, checkpoint_callback):
            try:
                super().after_save_checkpoint(checkpoint_callback)
            except Exception as exc:  # noqa: BLE001
                warn_once(self, "checkpoint", exc)

    return SafeMLFlowLogger


class SystemMetrics:
    """MLflow's system-metrics monitor (CPU, memory, disk, network, NVIDIA GPUs) on one run,
    one sample every ``interval_s`` seconds; :meth:`stop` publishes the samples since the
    last publication too, so a run shorter than one interval still gets one point each."""

    def __init__(self, run_id: str, uri: str, interval_s: float, resume: bool = False):
        self.run_id, self.uri, self.interval_s, self.resume = run_id, uri, interval_s, resume
        self._monitor = None

    def start(self) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.interval_s,
                                             resume_logging=self.resume,
                                             tracking_uri=self.uri)
        self._monitor.start()

    def stop(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        monitor.finish()
        if any(m._metrics for m in monitor.monitors):
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()


def write_hparams_session(writer, params: dict, final_metrics: dict[str, float]) -> None:
    """TensorBoard's HParams session of one run (a SummaryWriter): every param, and the final
    metrics as the scalars ``hparams/<name>``. Only the session is written, no experiment
    summary: TensorBoard then builds the tab's columns from all runs of the log folder
    together (with one experiment summary per run it would show one run's columns only)."""
    from torch.utils.tensorboard.summary import hparams

    metrics = {f"hparams/{key}": value for key, value in final_metrics.items()}
    if not metrics:  # the tab lists a run only with at least one metric
        metrics = {"hparams/finished": 1.0}
    params = {key: value if isinstance(value, bool | int | float | str) else str(value)
              for key, value in params.items()}
    _, session_start, session_end = hparams(params, metrics)
    file_writer = writer._get_file_writer()  # reopened if the Trainer closed it
    file_writer.add_summary(session_start)
    file_writer.add_summary(session_end)
    for key, value in metrics.items():
        writer.add_scalar(key, value, 0)
    writer.flush()


def as_array(values):
    import numpy as np

    return np.asarray(values, dtype=np.float64)


def image_tag(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_/.-]", "_", f"images/{Path(path).stem}")


def read_png(path: Path):
    import matplotlib.image as mpimg
    import numpy as np

    image = mpimg.imread(str(path))
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]

