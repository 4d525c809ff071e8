"""Atomic file writes: a temporary name in the same folder, then rename.

Shared by the library (model.pt, reconstructions) and tracking (sidecars, patch stats);
no dependency beyond numpy, so ``import tracking.files`` stays cheap.

A run killed at any moment leaves either the previous file or the new one, never half.
Every JSON and text file written here passes through :func:`tracking.redaction.redact`
first: a credential in a config or a command line never reaches the disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tracking.redaction import redact


@contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix,
                               dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; finished files are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """``text`` (credentials redacted) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(redact(text))


def atomic_write_json(path: str | Path, payload) -> None:
    """``payload`` as indented JSON (its strings redacted) to ``path``, atomically."""
    text = json.dumps(redact(payload), indent=2, default=_json_default) + "\n"
    atomic_write_text(path, text)


def atomic_savez(path: str | Path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def atomic_savefig(path: str | Path, figure, **kwargs) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", **kwargs)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
