"""MLflow + TensorBoard (+ CSV) for every run, through Lightning loggers.

Embedded default (zero set-up): MLflow on ``sqlite:///mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts`` and TensorBoard event files in ``mlruns/tensorboard/<experiment>/<run>``.
A sqlite URI elsewhere moves all three beside its database file; a server URI keeps
TensorBoard under ``./mlruns/tensorboard``. mlflow is imported lazily, here only.

``TrackedRun`` owns a run's life: it checks the store is reachable before any work, logs
params, tags, datasets, metrics and artifacts, keeps going (with one warning) when a write
fails mid-run, and ends the run FINISHED, FAILED (an exception) or KILLED (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

EMBEDDED_URI = "sqlite:///mlruns/mlflow.db"
SIDECAR_FILE = "tracking.json"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; raised before any training starts."""


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or EMBEDDED_URI


def redact_uri(uri: str) -> str:
    """Hide credentials: scheme://user:secret@host -> scheme://***@host."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def store_root(uri: str) -> Path:
    """Folder for artifacts/ and tensorboard/: beside a sqlite file, else ./mlruns."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent
    return Path("mlruns")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line, when the tracking store cannot be used."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailable(f"cannot create MLflow store folder {folder}: {exc}") \
                from exc
        return
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        health = urlunsplit((parts.scheme, parts.netloc.split("@")[-1],
                             parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=timeout_s) as response:
                if response.status >= 400:
                    raise TrackingUnavailable(
                        f"MLflow server {redact_uri(uri)} answered {response.status}")
        except OSError as exc:
            raise TrackingUnavailable(
                f"cannot reach MLflow tracking server {redact_uri(uri)} ({exc}); start it, fix "
                "--tracking-uri, or pass --logger tensorboard") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def environment_tags(device: str, seed: int, command: list[str]) -> dict[str, str]:
    import torch

    commit, dirty = git_state()
    if device == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, "\
                      f"{os.cpu_count()} cores)"
    return {
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda or "none"),
        "device": device,
        "device_name": device_name,
        "seed": str(seed),
        "command_line": shlex.join(command),
        "python_version": platform.python_version(),
    }


@contextlib.contextmanager
def _store_lock(uri: str):
    """Exclusive lock around creating runs in a sqlite store: two first runs on a new
    database would otherwise race to create its tables."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri[len("sqlite:///"):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _raise_killed(signum, frame):
    raise SystemExit(128 + signum)


def _warn_once(owner, what: str, exc: Exception) -> None:
    if not getattr(owner, "_tracking_warned", False):
        logger.warning("tracking write failed (%s): %s; training goes on and local files are "
                       "kept", what, exc)
        owner._tracking_warned = True
    owner.tracking_failed = True


def _safe_mlflow_logger_class():
    from lightning.pytorch.loggers import MLFlowLogger

    class SafeMLFlowLogger(MLFlowLogger):
        """MLFlowLogger whose writes never stop training: failures are reported once."""

        tracking_failed = False

        def log_metrics(self, metrics, step=None):
            try:
                super().log_metrics(metrics, step)
            except Exception as exc:  # noqa: BLE001 - any backend failure
                _warn_once(self, "metrics", exc)

        def log_hyperparams(self, params):
            try:
                super().log_hyperparams(params)
            except Exception as exc:  # noqa: BLE001
                _warn_once(self, "params", exc)

        def finalize(self, status="success"):
            # TrackedRun ends the run once its artifacts are up: a run never shows FINISHED
            # while its files are still being uploaded.
            return None

        def after_save_checkpoint(self, checkpoint_callback):
            try:
                super().after_save_checkpoint(checkpoint_callback)
            except Exception as exc:  # noqa: BLE001
                _warn_once(self, "checkpoint", exc)

    return SafeMLFlowLogger


class TrackedRun:
    """Context manager for one tracked run (train or inference).

    ``loggers`` are Lightning loggers (MLflow, TensorBoard, CSV as asked); hand them to the
    Trainer, or call :meth:`log_metrics` directly (inference).
    """

    def __init__(self, loggers: tuple[str, ...], kind: str, output_dir: str | Path,
                 command: list[str], tracking_uri: str | None = None,
                 experiment_name: str = "ptycho_torch", run_name: str | None = None,
                 device: str = "cpu", seed: int = 0, tags: dict[str, str] | None = None,
                 parent_run_id: str | None = None, resume_run_id: str | None = None):
        self.kinds = tuple(loggers)
        self.kind = kind
        self.output_dir = Path(output_dir)
        self.command = command
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.device = device
        self.seed = seed
        self.extra_tags = dict(tags or {})
        self.parent_run_id = parent_run_id or os.environ.get("PTYCHO_PARENT_RUN_ID")
        self.resume_run_id = resume_run_id
        self.run_id: str | None = None
        self.client = None
        self._resumed_params: dict[str, str] = {}
        self.loggers: list = []
        self.tracking_failed = False
        self.tensorboard_dir: Path | None = None

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> TrackedRun:
        # SIGTERM (a scheduler's kill) ends the run KILLED, like Ctrl-C, never RUNNING
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_killed)
        if "mlflow" in self.kinds:
            check_reachable(self.uri)
            self._start_mlflow()
        if "tensorboard" in self.kinds:
            from lightning.pytorch.loggers import TensorBoardLogger

            # the MLflow run name (given or generated) names the TensorBoard folder too
            name = self.run_name or f"{self.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
            tb = TensorBoardLogger(save_dir=str(store_root(self.uri) / "tensorboard"),
                                   name=self.experiment_name, version=name,
                                   default_hp_metric=False)
            self.tensorboard_dir = Path(tb.log_dir)
            self.loggers.append(tb)
            self._safely("tags", lambda: self._set_tags({"tensorboard_logdir":
                                                          str(self.tensorboard_dir)}))
        if "csv" in self.kinds:
            from lightning.pytorch.loggers import CSVLogger

            self.loggers.append(CSVLogger(save_dir=str(self.output_dir), name="csv_logs"))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt | SystemExit):
            status = "KILLED"
        else:
            status = "FAILED"
        for lg in self.loggers:
            if lg.__class__.__name__ == "TensorBoardLogger":
                self._safely("tensorboard", lambda lg=lg: lg.finalize("success"))
        if self.run_id is not None:
            self._safely("status", lambda: self.client.set_terminated(self.run_id, status))
            logger.info("MLflow run %s (%s) ended %s in %s", self.run_id, self.kind, status,
                        redact_uri(self.uri))
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        return False

    def _start_mlflow(self) -> None:
        try:
            with _store_lock(self.uri):
                self._create_run()
        except TrackingUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - surface as one clear line
            raise TrackingUnavailable(f"MLflow store {redact_uri(self.uri)} unusable: "
                                      f"{str(exc).splitlines()[0]}") from exc
        SafeMLFlowLogger = _safe_mlflow_logger_class()
        self.loggers.append(SafeMLFlowLogger(experiment_name=self.experiment_name,
                                             tracking_uri=self.uri, run_id=self.run_id))

    def _create_run(self) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        if self.resume_run_id is not None:
            self._continue_run(self.resume_run_id)
            return
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            location = None
            if self.uri.startswith("sqlite:///"):
                location = (store_root(self.uri) / "artifacts").resolve().as_uri()
            experiment_id = self._create_experiment(location)
        else:
            experiment_id = experiment.experiment_id
        tags = {"run_kind": self.kind,
                **environment_tags(self.device, self.seed, self.command),
                "tracking_uri": redact_uri(self.uri), **self.extra_tags}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        self.run_name = self.run_name or run.info.run_name

    def _continue_run(self, run_id: str) -> None:
        """Reopen an earlier run (``--resume``): RUNNING again, same id, name and params."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingUnavailable(
                f"cannot continue MLflow run {run_id}: not found in {redact_uri(self.uri)} "
                "(give the --tracking-uri the first run used, or --logger tensorboard)") from exc
        self.run_id = run_id
        self.run_name = run.info.run_name
        self._resumed_params = dict(run.data.params)
        self.experiment_name = self.client.get_experiment(run.info.experiment_id).name
        resumes = int(run.data.tags.get("resume_count", "0")) + 1
        self.client.update_run(run_id, status="RUNNING")
        self._set_tags({"resume_count": str(resumes),
                        f"resume.{resumes}.command_line": shlex.join(self.command),
                        f"resume.{resumes}.previous_status": run.info.status})
        logger.info("continuing MLflow run %s (%s, was %s)", run_id, self.run_name,
                    run.info.status)

    def _create_experiment(self, location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(self.experiment_name,
                                                 artifact_location=location)
        except MlflowException:  # created meanwhile by a concurrent run
            return self.client.get_experiment_by_name(self.experiment_name).experiment_id

    def write_sidecar(self, folder: str | Path) -> Path | None:
        """tracking.json in ``folder``: this run's id, so later runs can link to it."""
        if self.run_id is None:
            return None
        from ptycho_torch.io import atomic_write_json

        path = Path(folder) / SIDECAR_FILE
        atomic_write_json(path, {"run_id": self.run_id, "run_name": self.run_name,
                                 "experiment": self.experiment_name,
                                 "tracking_uri": redact_uri(self.uri)})
        return path

    # -- writes (never fatal) ----------------------------------------------------------
    def _safely(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - tracking must not lose a run's files
            _warn_once(self, what, exc)

    def _set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        self._safely("tags", lambda: self._set_tags(tags))

    def log_params(self, params: dict[str, object]) -> None:
        """Flat params to every logger (MLflow batched, values as strings)."""
        clean = {key: ("None" if value is None else value) for key, value in params.items()}
        # a continued run keeps its params (MLflow refuses to change one): values that
        # differ now, such as a raised max_epochs, become resume.changed.<key> tags
        changed = {key: str(value) for key, value in clean.items()
                   if key in self._resumed_params and self._resumed_params[key] != str(value)}
        for lg in self.loggers:
            values = clean
            if changed and lg.__class__.__name__ == "SafeMLFlowLogger":
                values = {key: value for key, value in clean.items() if key not in changed}
            self._safely("params", lambda lg=lg, values=values: lg.log_hyperparams(values))
        if changed:
            logger.info("resumed run: params changed since the first start: %s", changed)
            self.set_tags({f"resume.changed.{key}": value for key, value in changed.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for lg in self.loggers:
            self._safely("metrics", lambda lg=lg: lg.log_metrics(metrics, step))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run_id is not None and Path(path).is_file():
            self._safely("artifact", lambda: self.client.log_artifact(
                self.run_id, str(path), artifact_path))

    def log_dataset(self, path: str | Path, context: str) -> str:
        """Record a dataset file as an MLflow input with its sha256 digest; returns it."""
        digest = sha256_file(path)
        self.set_tags({f"dataset.{context}.file": str(Path(path).resolve()),
                       f"dataset.{context}.sha256": digest})
        if self.run_id is not None:
            self._safely("dataset", lambda: self._log_input(path, context, digest))
        return digest

    def _log_input(self, path, context: str, digest: str) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # a local path matches two equivalent source kinds
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(path).resolve()))
        dataset = MetaDataset(source, name=Path(path).name, digest=digest[:36])
        tag = InputTag(key="mlflow.data.context", value=context)
        self.client.log_inputs(self.run_id, [DatasetInput(dataset._to_mlflow_entity(), [tag])])

    # -- patch stats ---------------------------------------------------------------------
    def log_patch_record(self, record: dict) -> None:
        """Listener for PatchStatsRecorder: scalars to all loggers, histograms to TB."""
        from tracking.patch_stats import flat_metrics

        self.log_metrics(flat_metrics(record), step=record["step"])
        for lg in self.loggers:
            if lg.__class__.__name__ != "TensorBoardLogger":
                continue
            for stage, stats in record["stages"].items():
                values = stats["per_patch"]["var_zero_mean"]
                self._safely("histogram", lambda lg=lg, stage=stage, values=values:
                             lg.experiment.add_histogram(
                                 f"patch/{record['stage_name']}/{stage}/var_zero_mean_per_patch",
                                 _as_array(values), record["step"]))

    def publish_patch_stats(self, recorder, command: list[str]) -> None:
        """A PatchStatsRecorder's files: the primary folder's JSON and grid as artifacts under
        analysis/ (grid also a TensorBoard image), and provenance in every folder."""
        from ptycho_torch.io import record_provenance

        primary = [p for p in recorder.paths if p.parent == recorder.out_dirs[0]]
        for path in primary:
            self.log_artifact(path, "analysis")
        self.log_images([p for p in primary if p.suffix == ".png"])
        for folder in recorder.out_dirs:
            record_provenance(folder, command, recorder.paths)

    def log_images(self, paths: list[Path], step: int = 0) -> None:
        """PNG files as TensorBoard images (tag = file stem)."""
        for lg in self.loggers:
            if lg.__class__.__name__ != "TensorBoardLogger":
                continue
            for path in paths:
                if Path(path).suffix == ".png" and Path(path).is_file():
                    self._safely("image", lambda lg=lg, path=path: lg.experiment.add_image(
                        _image_tag(path), _read_png(path), step, dataformats="HWC"))
            self._safely("tensorboard", lambda lg=lg: lg.experiment.flush())


def _as_array(values):
    import numpy as np

    return np.asarray(values, dtype=np.float64)


def _image_tag(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_/.-]", "_", f"images/{Path(path).stem}")


def _read_png(path: Path):
    import matplotlib.image as mpimg
    import numpy as np

    image = mpimg.imread(str(path))
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def command_line(prog: str, argv: list[str] | None) -> list[str]:
    return [prog, *(sys.argv[1:] if argv is None else argv)]
