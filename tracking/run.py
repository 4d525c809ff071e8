"""The life of one tracked run: MLflow + TensorBoard (+ CSV) through Lightning loggers.

``TrackedRun`` checks the store is reachable before any work, logs params, tags, datasets,
metrics and artifacts, keeps going (with one warning) when a write fails mid-run, and ends
the run FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM). Its loggers are typed
handles (``mlflow_logger``, ``tensorboard_logger``, ``csv_logger``); hand ``loggers`` to a
Lightning Trainer, or call :meth:`TrackedRun.log_metrics` directly. Its MLflow operations
go through ``tracking.store_client`` (in this process) or ``tracking.agent`` (a second
process a CLI started); nothing here imports mlflow. Store layout: ``tracking.store``; tags
and provenance: ``tracking.provenance``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import signal
import threading
import time
from pathlib import Path

from tracking.backends import (
    as_array,
    image_tag,
    read_png,
    run_logger_class,
    warn_once,
    write_hparams_session,
)
from tracking.files import atomic_write_json
from tracking.provenance import environment_tags, record_provenance, sha256_file
from tracking.redaction import redact
from tracking.store import (
    TrackingUnavailable,
    check_reachable,
    resolve_tracking_uri,
    store_lock,
    store_root,
)

logger = logging.getLogger(__name__)

SIDECAR_FILE = "tracking.json"


def read_sidecar(folder: str | Path) -> dict:
    """The tracking.json a run wrote into ``folder`` ({} when there is none); raises
    ValueError when it is unreadable."""
    path = Path(folder) / SIDECAR_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc})") from exc


def _raise_killed(signum, frame):
    raise SystemExit(128 + signum)


class TrackedRun:
    """Context manager for one tracked run (train, inference, baseline).

    ``loggers`` names the backends ("mlflow", "tensorboard", "csv"); an empty tuple tracks
    nothing. ``parent_run_id`` nests the run under another (the baseline's children);
    ``resume_run_id`` reopens an earlier run (``--resume``).
    """

    def __init__(self, *, kind: str, output_dir: str | Path, command: list[str],
                 loggers: tuple[str, ...] = ("mlflow", "tensorboard"),
                 tracking_uri: str | None = None, experiment_name: str = "ptycho_torch",
                 run_name: str | None = None, device: str = "cpu", seed: int = 0,
                 tags: dict[str, str] | None = None, parent_run_id: str | None = None,
                 resume_run_id: str | None = None, system_metrics_interval: float | None = 5.0):
        self.backends = tuple(loggers)
        self.kind = kind
        self.output_dir = Path(output_dir)
        self.command = command
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.device = device
        self.seed = seed
        self.extra_tags = dict(tags or {})
        self.parent_run_id = parent_run_id
        self.resume_run_id = resume_run_id
        self.run_id: str | None = None
        self.store = None
        self.mlflow_logger = None
        self.tensorboard_logger = None
        self.csv_logger = None
        self.system_metrics_interval = system_metrics_interval
        self.tracking_failed = False
        self._resumed_params: dict[str, str] = {}
        self._resumed_tags: dict[str, str] = {}
        self._hparams: dict[str, object] = {}
        self._final_metrics: dict[str, float] = {}
        self._previous_sigterm = None

    @property
    def loggers(self) -> list:
        """The Lightning loggers of this run, for a Trainer."""
        return [lg for lg in (self.mlflow_logger, self.tensorboard_logger, self.csv_logger)
                if lg is not None]

    @property
    def tensorboard_dir(self) -> Path | None:
        return None if self.tensorboard_logger is None else Path(self.tensorboard_logger.log_dir)

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> TrackedRun:
        # SIGTERM (a scheduler's kill) ends the run KILLED, like Ctrl-C, never RUNNING
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_killed)
        if "mlflow" in self.backends:
            check_reachable(self.uri)
            self._start_mlflow()
        if "tensorboard" in self.backends:
            from lightning.pytorch.loggers import TensorBoardLogger

            self.tensorboard_logger = TensorBoardLogger(
                save_dir=str(store_root(self.uri) / "tensorboard"), name=self.experiment_name,
                version=self._tensorboard_folder_name(), default_hp_metric=False)
            self.set_tags({"tensorboard_logdir": str(self.tensorboard_dir)})
        if "csv" in self.backends:
            from lightning.pytorch.loggers import CSVLogger

            self.csv_logger = CSVLogger(save_dir=str(self.output_dir), name="csv_logs")
        return self

    def _tensorboard_folder_name(self) -> str:
        """One folder per run: ``<run name>-<first 8 characters of the MLflow run id>``
        (``<run name>-<time stamp>`` without MLflow); a resumed run keeps its folder."""
        earlier = self._resumed_tags.get("tensorboard_logdir")
        if earlier:
            return Path(earlier).name
        name = self.run_name or self.kind
        suffix = self.run_id[:8] if self.run_id else time.strftime("%Y%m%d-%H%M%S")
        return f"{name}-{suffix}"

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt | SystemExit):
            status = "KILLED"
        else:
            status = "FAILED"
        if self.store is not None and self.system_metrics_interval:
            self._safely("system metrics", self.store.stop_system_metrics)
        if self.tensorboard_logger is not None:
            if status == "FINISHED" and self._hparams:
                self._safely("hparams", lambda: write_hparams_session(
                    self.tensorboard_logger.experiment, self._hparams, self._final_metrics))
            self._safely("tensorboard", lambda: self.tensorboard_logger.finalize("success"))
        if self.csv_logger is not None:  # its metrics.csv is written on save only
            self._safely("csv", lambda: self.csv_logger.finalize("success"))
        if self.run_id is not None:
            self._safely("status", lambda: self.store.set_terminated(self.run_id, status))
        if self.store is not None:  # the agent drains its queue: every write is done
            self._safely("close", self.store.close)
        if self.run_id is not None:
            logger.info("MLflow run %s (%s) ended %s in %s", self.run_id, self.kind, status,
                        redact(self.uri))
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        return False

    def _start_mlflow(self) -> None:
        from tracking.agent import open_store
        from tracking.store_client import LocalStore

        try:
            self.store = open_store(self.uri)
            # the agent locks the store itself; in this process the lock is taken here
            in_process = isinstance(self.store, LocalStore)
            with store_lock(self.uri) if in_process else contextlib.nullcontext():
                self._create_run()
        except TrackingUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - surface as one clear line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TrackingUnavailable(redact(f"MLflow store {self.uri} unusable: {first}")
                                      ) from exc
        self.mlflow_logger = run_logger_class()(self)
        if self.system_metrics_interval:
            self._safely("system metrics", lambda: self.store.start_system_metrics(
                self.run_id, self.system_metrics_interval, self.resume_run_id is not None))

    def _create_run(self) -> None:
        if self.resume_run_id is not None:
            self._continue_run(self.resume_run_id)
            return
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (store_root(self.uri) / "artifacts").resolve().as_uri()
        tags = {"run_kind": self.kind,
                **environment_tags(self.device, self.seed, self.command),
                "tracking_uri": self.uri, **self.extra_tags}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.store.create_run(self.experiment_name, self.run_name, redact(tags),
                                    location)
        self.run_id = run["run_id"]
        self.run_name = self.run_name or run["run_name"]

    def _continue_run(self, run_id: str) -> None:
        """Reopen an earlier run (``--resume``): RUNNING again, same id, name and params."""
        from tracking.store_client import RunNotFound

        try:
            run = self.store.continue_run(run_id)
        except RunNotFound as exc:
            raise TrackingUnavailable(
                f"cannot continue MLflow run {run_id}: not found in {redact(self.uri)} "
                "(give the --tracking-uri the first run used, or --logger tensorboard)") from exc
        self.run_id = run_id
        self.run_name = run["run_name"]
        self._resumed_params = run["params"]
        self._resumed_tags = run["tags"]
        self.experiment_name = run["experiment_name"]
        resumes = int(run["tags"].get("resume_count", "0")) + 1
        self._set_tags({"resume_count": str(resumes),
                        f"resume.{resumes}.command_line": shlex.join(self.command),
                        f"resume.{resumes}.previous_status": run["status"]})
        logger.info("continuing MLflow run %s (%s, was %s)", run_id, self.run_name,
                    run["status"])

    def write_sidecar(self, folder: str | Path) -> Path | None:
        """tracking.json in ``folder``: this run's id, so later runs can link to it."""
        if self.run_id is None:
            return None
        path = Path(folder) / SIDECAR_FILE
        atomic_write_json(path, {"run_id": self.run_id, "run_name": self.run_name,
                                 "experiment": self.experiment_name,
                                 "tracking_uri": redact(self.uri)})
        return path

    # -- writes (never fatal) ----------------------------------------------------------
    def _safely(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - tracking must not lose a run's files
            warn_once(self, what, exc)

    def _set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id is None:
            return
        self.store.log(self.run_id, tags=redact({k: str(v) for k, v in tags.items()}))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._safely("tags", lambda: self._set_tags(tags))

    def log_params(self, params: dict[str, object]) -> None:
        """Flat params to every logger (MLflow batched, values as strings; credentials
        redacted, so neither MLflow nor TensorBoard's hparams nor hparams.yaml holds one)."""
        clean = redact({key: ("None" if value is None else value)
                        for key, value in params.items()})
        self._hparams.update(clean)
        # a continued run keeps its params (MLflow refuses to change one): values that
        # differ now, such as a raised max_epochs, become resume.changed.<key> tags
        changed = {key: str(value) for key, value in clean.items()
                   if key in self._resumed_params and self._resumed_params[key] != str(value)}
        for lg in self.loggers:
            values = clean
            if changed and lg is self.mlflow_logger:
                values = {key: value for key, value in clean.items() if key not in changed}
            self._safely("params", lambda lg=lg, values=values: lg.log_hyperparams(values))
        if changed:
            logger.info("resumed run: params changed since the first start: %s", changed)
            self.set_tags({f"resume.changed.{key}": value for key, value in changed.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for lg in self.loggers:
            self._safely("metrics", lambda lg=lg: lg.log_metrics(metrics, step))

    def log_final_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Metrics that describe the finished run (reconstruction scores): logged now, and
        listed beside the params in TensorBoard's HParams tab at the end."""
        self.log_metrics(metrics, step)
        self.remember_final_metrics(metrics)

    def remember_final_metrics(self, metrics: dict[str, float]) -> None:
        """Metrics already logged (a trainer's last losses) for the HParams tab only."""
        self._final_metrics.update({key: float(value) for key, value in metrics.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run_id is not None and Path(path).is_file():
            self._safely("artifact", lambda: self.store.log_artifact(
                self.run_id, str(path), artifact_path))

    def log_model(self, files: list[Path], checkpoints: list[Path] = (),
                  register_as: str | None = None) -> str | None:
        """The trained model's files under the artifact path ``model`` (what
        ``--model_path runs:/<run id>`` downloads), Lightning checkpoints under
        ``checkpoints``, and, with ``register_as``, a new version of that registered model
        (its number is returned)."""
        from tracking.models import CHECKPOINT_ARTIFACT_PATH, MODEL_ARTIFACT_PATH

        for path in files:
            self.log_artifact(path, MODEL_ARTIFACT_PATH)
        for path in checkpoints:
            self.log_artifact(path, CHECKPOINT_ARTIFACT_PATH)
        if register_as is None or self.run_id is None:
            return None
        version = None

        def register():
            nonlocal version
            version = self.store.register_model(self.run_id, register_as)
            self.set_tags({"registered_model": f"models:/{register_as}/{version}"})
            logger.info("registered models:/%s/%s", register_as, version)

        self._safely("model registry", register)
        return version

    def log_dataset(self, path: str | Path, context: str) -> str:
        """Record a dataset file as an MLflow input with its sha256 digest; returns it."""
        digest = sha256_file(path)
        self.set_tags({f"dataset.{context}.file": str(Path(path).resolve()),
                       f"dataset.{context}.sha256": digest})
        if self.run_id is not None:
            self._safely("dataset", lambda: self.store.log_dataset(
                self.run_id, str(path), context, digest))
        return digest

    # -- patch stats ---------------------------------------------------------------------
    def log_patch_record(self, record: dict) -> None:
        """Listener for PatchStatsRecorder: scalars to all loggers, histograms to TB."""
        from tracking.patch_stats import flat_metrics

        self.log_metrics(flat_metrics(record), step=record["step"])
        tb = self.tensorboard_logger
        if tb is None:
            return
        for stage, stats in record["stages"].items():
            values = stats["per_patch"]["var_zero_mean"]
            self._safely("histogram", lambda stage=stage, values=values:
                         tb.experiment.add_histogram(
                             f"patch/{record['stage_name']}/{stage}/var_zero_mean_per_patch",
                             as_array(values), record["step"]))

    def publish_patch_stats(self, recorder, command: list[str]) -> None:
        """A PatchStatsRecorder's files: the primary folder's JSON and grid as artifacts under
        analysis/ (grid also a TensorBoard image), and provenance in every folder."""
        primary = [p for p in recorder.paths if p.parent == recorder.out_dirs[0]]
        for path in primary:
            self.log_artifact(path, "analysis")
        self.log_images([p for p in primary if p.suffix == ".png"])
        for folder in recorder.out_dirs:
            record_provenance(folder, command, recorder.paths)

    def log_images(self, paths: list[Path], step: int = 0) -> None:
        """PNG files as TensorBoard images (tag = file stem)."""
        tb = self.tensorboard_logger
        if tb is None:
            return
        for path in paths:
            if Path(path).suffix == ".png" and Path(path).is_file():
                self._safely("image", lambda path=path: tb.experiment.add_image(
                    image_tag(path), read_png(path), step, dataformats="HWC"))
        self._safely("tensorboard", lambda: tb.experiment.flush())
