"""Trained models as run artifacts: the URIs ``runs:/<run id>[/<path>]`` and
``models:/<name>/<version>`` resolved to a local folder holding model.pt and config.json.

Training logs its model folder under the artifact path ``model`` (docs/tracking.md,
"Models and checkpoints"); ``--register-model NAME`` also makes it a version of a
registered model. The files are only downloaded here: loading them (weights only, never a
pickled module) is the caller's job. mlflow is imported lazily.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tracking.redaction import redact
from tracking.store import TrackingUnavailable, resolve_tracking_uri

MODEL_ARTIFACT_PATH = "model"
CHECKPOINT_ARTIFACT_PATH = "checkpoints"
_RUNS = re.compile(r"^runs:/(?P<run_id>[0-9a-fA-F]{8,64})(?:/(?P<path>.*))?$")
_MODELS = re.compile(r"^models:/(?P<name>[^/]+)/(?P<version>\d+|latest)$")


def is_model_uri(text: str) -> bool:
    """True for ``runs:/...`` and ``models:/...`` (anything else is a local folder)."""
    return str(text).startswith(("runs:/", "models:/"))


def _check_listing(client, run_id: str, path: str, depth: int = 0) -> None:
    """Every artifact under ``path`` has a plain relative name inside it (a store listing
    ``../`` or an absolute name would have the download write outside its folder)."""
    for item in client.list_artifacts(run_id, path):
        name = PurePosixPath(item.path)
        if name.is_absolute() or ".." in name.parts or not name.is_relative_to(path):
            raise TrackingUnavailable(f"run {run_id}: artifact {item.path!r} is not inside "
                                      f"'{path}'; refused, nothing downloaded")
        if item.is_dir and depth < 8:
            _check_listing(client, run_id, item.path, depth + 1)


def _download(client, run_id: str, path: str, dst: Path) -> Path:
    from mlflow.exceptions import MlflowException

    path = path.strip("/") or MODEL_ARTIFACT_PATH
    try:
        _check_listing(client, run_id, path)
        local = Path(client.download_artifacts(run_id, path, str(dst)))
    except MlflowException as exc:
        raise TrackingUnavailable(f"run {run_id} has no model artifacts at '{path}' "
                                  f"({str(exc).splitlines()[0]})") from exc
    if not local.resolve().is_relative_to(Path(dst).resolve()):
        raise TrackingUnavailable(f"run {run_id}: the model was downloaded outside {dst}; "
                                  "refused")
    return local


def _model_version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise TrackingUnavailable(f"registered model '{name}' has no versions")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise TrackingUnavailable(f"models:/{name}/{version} not found "
                                  f"({str(exc).splitlines()[0]})") from exc


def download_model(uri: str, dst: str | Path, tracking_uri: str | None = None
                   ) -> tuple[Path, dict[str, str]]:
    """Download the model folder named by ``uri`` into ``dst``; returns the local folder and
    tags naming where it came from (``train_run_id``, ``model_uri``). Raises ValueError on
    a malformed URI, TrackingUnavailable when the store or the run/model is missing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    tracking_uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    runs, models = _RUNS.match(uri), _MODELS.match(uri)
    if runs:
        run_id, path = runs["run_id"], runs["path"] or MODEL_ARTIFACT_PATH
    elif models:
        version = _model_version(client, models["name"], models["version"])
        source = _RUNS.match(version.source or "")
        run_id = version.run_id
        path = source["path"] if source and source["path"] else MODEL_ARTIFACT_PATH
    else:
        raise ValueError(f"{uri}: expected runs:/<run id>[/<path>] or "
                         "models:/<name>/<version>")
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise TrackingUnavailable(f"run {run_id} not found in {redact(tracking_uri)} "
                                  "(give the --tracking-uri the training used)") from exc
    folder = _download(client, run_id, path, Path(dst))
    return folder, {"train_run_id": run_id, "model_uri": uri}


def register_model(client, run_id: str, name: str) -> str:
    """Make the run's ``model`` artifacts a new version of the registered model ``name``
    (created when missing); returns the version number."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                getattr(exc, "error_code", "")):
            raise
    version = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}",
                                          run_id=run_id)
    return str(version.version)
