"""The pieces of a tracked run that talk to one backend: the Lightning logger that hands
metrics to the run's MLflow store (failures never stop training), MLflow's system-metrics
monitor, TensorBoard's HParams session and image helpers. :class:`tracking.run.TrackedRun`
puts them together."""

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


def run_logger_class():
    """The Lightning logger class that hands a Trainer's metrics to a tracked run's MLflow
    store (in this process or the tracking agent); a failed write is reported once and
    training goes on."""
    from lightning.pytorch.loggers.logger import Logger

    class RunLogger(Logger):
        """Lightning metrics and hyperparameters -> ``run.store`` of a TrackedRun."""

        tracking_failed = False

        def __init__(self, run):
            super().__init__()
            self._run = run

        @property
        def name(self) -> str:
            return self._run.experiment_name

        @property
        def version(self) -> str:
            return self._run.run_id

        @property
        def experiment(self):
            return self._run.store

        def log_metrics(self, metrics, step=None):
            values = {key: float(value) for key, value in metrics.items()
                      if not isinstance(value, str)}
            try:
                self._run.store.log(self._run.run_id, metrics=values, step=step)
            except Exception as exc:  # noqa: BLE001 - any backend failure
                warn_once(self, "metrics", exc)

        def log_hyperparams(self, params, *args, **kwargs):
            try:
                self._run.store.log(self._run.run_id,
                                    params={key: str(value) for key, value in
                                            dict(params).items()})
            except Exception as exc:  # noqa: BLE001
                warn_once(self, "params", exc)

    return RunLogger


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

