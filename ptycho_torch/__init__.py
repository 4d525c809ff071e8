"""PtychoPINN in PyTorch + Lightning: the library API (docs/library.md).

``load_scan`` -> ``build_run_config`` -> ``fit`` -> ``reconstruct`` (or ``load_model`` of a
training folder). Imported lazily, so ``import ptycho_torch`` stays fast.
"""

from __future__ import annotations

import importlib

_API = {
    "load_scan": "ptycho_torch.data",
    "build_run_config": "ptycho_torch.config_factory",
    "fit": "ptycho_torch.workflows",
    "reconstruct": "ptycho_torch.workflows",
    "load_model": "ptycho_torch.workflows",
    "group_scan": "ptycho_torch.workflows",
    "TrainResult": "ptycho_torch.workflows",
    "Reconstruction": "ptycho_torch.workflows",
    "RunConfig": "ptycho_torch.config",
    "TrainingConfig": "ptycho_torch.config",
    "InferenceConfig": "ptycho_torch.config",
    "ExecutionConfig": "ptycho_torch.config",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'ptycho_torch' has no attribute {name!r}")
