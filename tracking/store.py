"""Where runs are stored: tracking URI resolution, reachability, store folders, locking.

Embedded default (zero set-up): MLflow on ``sqlite:///mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts`` and TensorBoard event files in ``mlruns/tensorboard``. A sqlite URI
elsewhere moves all three beside its database file; a server URI keeps TensorBoard under
``./mlruns/tensorboard``. Nothing here imports mlflow.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tracking.redaction import redact

EMBEDDED_URI = "sqlite:///mlruns/mlflow.db"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; raised before any training starts."""


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or EMBEDDED_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def store_root(uri: str) -> Path:
    """Folder for artifacts/ and tensorboard/: beside a sqlite file, else ./mlruns."""
    database = sqlite_path(uri)
    return database.parent if database is not None else Path("mlruns")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line, when the tracking store cannot be used."""
    database = sqlite_path(uri)
    if database is not None:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailable(f"cannot create MLflow store folder {database.parent}: "
                                      f"{exc}") from exc
        return
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        health = urlunsplit((parts.scheme, parts.netloc.split("@")[-1],
                             parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=timeout_s) as response:
                if response.status >= 400:
                    raise TrackingUnavailable(
                        f"MLflow server {redact(uri)} answered {response.status}")
        except OSError as exc:
            raise TrackingUnavailable(
                f"cannot reach MLflow tracking server {redact(uri)} ({redact(str(exc))}); start "
                "it, fix "
                "--tracking-uri, or pass --logger tensorboard") from exc


@contextlib.contextmanager
def store_lock(uri: str):
    """Exclusive lock around creating runs in a sqlite store: two first runs on a new
    database would otherwise race to create its tables."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    import fcntl

    lock_path = Path(f"{database}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
