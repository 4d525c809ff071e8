"""Frozen configuration dataclasses, one per concern; JSON-able for params and checkpoints."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class LossMode(StrEnum):
    POISSON = "poisson"
    MAE = "mae"


class Accelerator(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class DataConfig:
    """How scans become training groups. ``n_groups`` None means one group per scan point."""

    patch_size_px: int = 64
    gridsize: int = 1
    n_neighbors: int = 4
    n_groups: int | None = None
    nphotons: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.gridsize < 1:
            raise ValueError(f"gridsize must be >= 1, got {self.gridsize}")
        if self.n_neighbors < self.gridsize**2:
            raise ValueError(
                f"n_neighbors (K={self.n_neighbors}) must be >= gridsize^2 = {self.gridsize**2}"
            )
        if self.n_groups is not None and self.n_groups < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_groups}")
        if self.nphotons is not None and not self.nphotons > 0:
            raise ValueError(f"nphotons must be > 0, got {self.nphotons}")

    @property
    def n_channels(self) -> int:
        return self.gridsize**2


DECODERS = ("reference", "fine")  # network presets (--decoder)
STITCH_WEIGHTS = ("crop", "probe")  # how stitching averages overlaps (--stitch-weight)


@dataclass(frozen=True)
class ModelConfig:
    """Network preset and physics options (reference defaults)."""

    patch_size_px: int = 64
    n_channels: int = 1
    n_filters_scale: int = 2
    probe_scale: float = 4.0
    probe_mask: bool = False
    probe_big: bool = True
    loss_mode: LossMode = LossMode.POISSON
    nphotons: float = 1e9
    object_gain_trainable: bool = True
    decoder: str = "reference"

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.patch_size_px % 8:
            raise ValueError(f"patch size N must be a multiple of 8, got {self.patch_size_px}")
        if self.probe_scale <= 0:
            raise ValueError(f"probe_scale must be > 0, got {self.probe_scale}")
        object.__setattr__(self, "loss_mode", LossMode(self.loss_mode))


@dataclass(frozen=True)
class TrainingConfig:
    max_epochs: int = 50
    max_time_minutes: float | None = None
    batch_size: int = 16
    learning_rate: float = 1e-3
    val_fraction: float = 0.05
    lr_factor: float = 0.5
    lr_patience_epochs: int = 2
    min_learning_rate: float = 1e-4

    def __post_init__(self):
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.max_time_minutes is not None and not self.max_time_minutes > 0:
            raise ValueError(f"max time must be > 0 minutes, got {self.max_time_minutes}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class InferenceConfig:
    inference_batch_size: int = 256
    stitch_crop_px: int | None = None
    stitch_weight: str = "crop"

    def __post_init__(self):
        if self.stitch_weight not in STITCH_WEIGHTS:
            raise ValueError(f"stitch weight must be one of {STITCH_WEIGHTS}, got "
                             f"{self.stitch_weight!r}")
        if self.inference_batch_size < 1:
            raise ValueError(
                f"inference batch size must be >= 1, got {self.inference_batch_size}"
            )


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how a run executes; shared by train and inference."""

    accelerator: Accelerator = Accelerator.AUTO
    devices: int = 1
    strategy: str = "auto"
    deterministic: bool = True
    num_workers: int = 0
    quiet: bool = False
    seed: int = 0
    log_patch_stats: bool = False
    patch_stats_limit: int = 1
    patch_stats_dir: str | None = None
    loggers: tuple[str, ...] = ("mlflow", "tensorboard")
    tracking_uri: str | None = None
    experiment_name: str = "ptycho_torch"
    run_name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "accelerator", Accelerator(self.accelerator))
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.patch_stats_limit < 1:
            raise ValueError(f"patch_stats_limit must be >= 1, got {self.patch_stats_limit}")
        object.__setattr__(self, "loggers", tuple(self.loggers))


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run used; saved as config.json beside the weights."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    train_data_file: str = ""
    test_data_file: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> RunConfig:
        return cls(
            data=DataConfig(**payload["data"]),
            model=ModelConfig(**payload["model"]),
            training=TrainingConfig(**payload["training"]),
            execution=ExecutionConfig(**payload["execution"]),
            train_data_file=payload.get("train_data_file", ""),
            test_data_file=payload.get("test_data_file"),
        )

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def flatten(payload: dict, prefix: str = "") -> dict[str, object]:
    """Nested dict -> {"a.b": value}: flat names for MLflow params."""
    flat: dict[str, object] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
