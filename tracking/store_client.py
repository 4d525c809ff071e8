"""Every MLflow operation of a tracked run's life, behind one small interface.

:class:`LocalStore` runs them in this process with an ``MlflowClient``;
:class:`tracking.agent.AgentStore` sends the same calls to a tracking agent process (started
before a CLI's heavy imports, so that MLflow's own start-up costs the run nothing).
:class:`tracking.run.TrackedRun` uses either through the same methods. Values cross the
interface as plain JSON types: nothing outside this module and the agent imports mlflow.
"""

from __future__ import annotations

import logging
import os
import warnings
from itertools import zip_longest
from pathlib import Path

logger = logging.getLogger("tracking.run")


def _chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


class RunNotFound(LookupError):
    """The run to continue is not in the store."""


class LocalStore:
    """MLflow operations of one run's life, executed here."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        # MLflow prints "View run ... at <server URL>" when a run ends, credentials and all;
        # TrackedRun logs the run's end itself, with the store's URI redacted
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self._monitor = None

    # -- runs ----------------------------------------------------------------------------
    def create_run(self, experiment_name: str, run_name: str | None, tags: dict[str, str],
                   artifact_location: str | None) -> dict:
        """A new RUNNING run (the experiment created when missing) -> its id and name."""
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(
                    experiment_name, artifact_location=artifact_location)
            except MlflowException:  # created meanwhile by a concurrent run
                experiment_id = self.client.get_experiment_by_name(
                    experiment_name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        return {"run_id": run.info.run_id, "run_name": run.info.run_name}

    def continue_run(self, run_id: str) -> dict:
        """Reopen a run (RUNNING again) -> its name, experiment, status, params and tags."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise RunNotFound(run_id) from exc
        self.client.update_run(run_id, status="RUNNING")
        return {"run_name": run.info.run_name, "status": run.info.status,
                "experiment_name": self.client.get_experiment(run.info.experiment_id).name,
                "params": dict(run.data.params), "tags": dict(run.data.tags)}

    def set_terminated(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    # -- writes --------------------------------------------------------------------------
    def log(self, run_id: str, metrics: dict[str, float] | None = None,
            step: int | None = None, params: dict[str, str] | None = None,
            tags: dict[str, str] | None = None) -> None:
        """Metrics (at ``step``), params and tags in one batched write."""
        import time

        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        # MLflow takes at most 1000 metrics, 100 params and 100 tags per batch
        batches = zip_longest(
            _chunks([Metric(key, float(value), now, step or 0)
                     for key, value in (metrics or {}).items()], 1000),
            _chunks([Param(key, str(value)) for key, value in (params or {}).items()], 100),
            _chunks([RunTag(key, str(value)) for key, value in (tags or {}).items()], 100),
            fillvalue=[])
        for metric_batch, param_batch, tag_batch in batches:
            self.client.log_batch(run_id, metrics=metric_batch, params=param_batch,
                                  tags=tag_batch)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, path, artifact_path)

    def log_dataset(self, run_id: str, path: str, context: str, digest: str) -> None:
        """The file as an MLflow dataset input (name, digest, context tag)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # a local path matches two equivalent source kinds
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(path).resolve()))
        dataset = MetaDataset(source, name=Path(path).name, digest=digest[:36])
        tag = InputTag(key="mlflow.data.context", value=context)
        self.client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), [tag])])

    def register_model(self, run_id: str, name: str) -> str:
        from tracking.models import register_model

        return register_model(self.client, run_id, name)

    # -- system metrics ------------------------------------------------------------------
    def start_system_metrics(self, run_id: str, interval_s: float, resume: bool) -> None:
        from tracking.backends import SystemMetrics

        self._monitor = SystemMetrics(run_id, self.uri, interval_s, resume=resume)
        self._monitor.start()

    def stop_system_metrics(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.stop()

    def close(self) -> None:
        """Nothing is pending in this process (every call above returned when done)."""
