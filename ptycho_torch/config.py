"""Frozen configuration dataclasses, one per concern; JSON-able for params and checkpoints.

Every choice is a StrEnum (its value is what the CLI flag and config.json hold); every
cross-field fact is checked once, in the ``__post_init__`` of the config that holds both
fields (``RunConfig`` for facts that span configs). Units are in the field names or their
docstrings.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Choice(StrEnum):
    """A config choice; an unknown value is refused with the valid ones listed."""

    @classmethod
    def _missing_(cls, value):
        label = re.sub(r"(?<!^)([A-Z])", r" \1", cls.__name__).lower()
        raise ValueError(f"{label} must be one of {[m.value for m in cls]}, got {value!r}")


class LossMode(Choice):
    """Training loss: Poisson NLL on counts, or MAE on amplitudes (docs/conventions.md)."""

    POISSON = "poisson"
    MAE = "mae"


class Accelerator(Choice):
    """Where to run; ``auto`` picks a visible CUDA GPU, ``gpu``/``cuda`` require one."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"
    CUDA = "cuda"


class Decoder(Choice):
    """Decoder preset: ``reference`` (a linear 3x3 head is the only layer at the output
    resolution) or ``fine`` (one more conv-conv block at that resolution)."""

    REFERENCE = "reference"
    FINE = "fine"


class StitchWeight(Choice):
    """How stitching averages overlaps: ``crop`` (central crops, plain mean: the
    reference) or ``probe`` (whole patches weighted by the probe intensity |P|^2)."""

    CROP = "crop"
    PROBE = "probe"


def check_patch_size(n: int) -> None:
    """N must survive the encoder's three 2x poolings."""
    if n % 8:
        raise ValueError(f"patch size N must be a multiple of 8, got {n}")


@dataclass(frozen=True)
class DataConfig:
    """How scans become groups of patterns (docs/data_contract.md, "Grouping")."""

    patch_size_px: int = 64
    """N: pattern and probe side, pixels."""
    gridsize: int = 1
    """Group side g: each group holds C = g^2 patterns."""
    n_neighbors: int = 4
    """K: a group is drawn from its seed point's K nearest scan points (K >= g^2)."""
    n_groups: int | None = None
    """Groups to build; None means one per scan point."""
    nphotons: float | None = None
    """Photons per pattern for the physics scale (None: not resolved yet)."""
    seed: int = 0
    """Seed of grouping and of the train/validation split."""

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


@dataclass(frozen=True)
class ModelConfig:
    """Network preset and physics options (reference defaults; docs/conventions.md)."""

    patch_size_px: int = 64
    """N, pixels; a multiple of 8."""
    n_channels: int = 1
    """C = gridsize^2 patterns per group, the network's input and output channels."""
    n_filters_scale: int = 2
    """Network width multiplier; 2 is the reference (32, 64, 128 times it)."""
    probe_scale: float = 4.0
    """Probe normalization divisor: P / (probe_scale * mean|P| inside r < N/4)."""
    probe_mask: bool = False
    """Multiply the probe by a hard disk of radius N/4."""
    probe_big: bool = True
    """Fill the border outside the central N/2 square by an extra decoder branch."""
    loss_mode: LossMode = LossMode.POISSON
    nphotons: float = 1e9
    """Photons per pattern; physics scale s = sqrt(nphotons) / (N/2)."""
    object_gain_trainable: bool = True
    """Train the global object-amplitude gain g (docs/conventions.md)."""
    decoder: Decoder = Decoder.REFERENCE

    def __post_init__(self):
        check_patch_size(self.patch_size_px)
        if self.probe_scale <= 0:
            raise ValueError(f"probe_scale must be > 0, got {self.probe_scale}")
        object.__setattr__(self, "loss_mode", LossMode(self.loss_mode))
        object.__setattr__(self, "decoder", Decoder(self.decoder))


@dataclass(frozen=True)
class TrainingConfig:
    """Optimization: Adam with the reference's ReduceLROnPlateau schedule."""

    max_epochs: int = 50
    max_time_minutes: float | None = None
    """Wall-clock budget in minutes (None: no limit)."""
    batch_size: int = 16
    """Groups per batch."""
    learning_rate: float = 1e-3
    val_fraction: float = 0.05
    """Fraction of groups held out for validation, in [0, 1)."""
    lr_factor: float = 0.5
    """Learning-rate multiplier on a plateau."""
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
    """How a trained model reconstructs a scan."""

    n_groups: int | None = None
    """Groups to reconstruct; None means one per scan point."""
    inference_batch_size: int = 256
    """Groups per forward pass (memory stays flat as the scan grows)."""
    stitch_crop_px: int | None = None
    """Central crop of each patch stitched and scored, pixels (None: N * 20 / 64)."""
    stitch_weight: StitchWeight = StitchWeight.CROP

    def __post_init__(self):
        object.__setattr__(self, "stitch_weight", StitchWeight(self.stitch_weight))
        if self.n_groups is not None and self.n_groups < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_groups}")
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
    """Lightning strategy name (auto, ddp, ...)."""
    deterministic: bool = True
    num_workers: int = 0
    """DataLoader worker processes."""
    quiet: bool = False
    seed: int = 0
    """Seed of grouping, splits and initialization."""
    log_patch_stats: bool = False
    patch_stats_limit: int = 1
    """Instrumented batches per stage name (train, val, inference)."""
    patch_stats_dir: str | None = None
    """Folder for the patch-stats JSON and grid (None: <output_dir>/analysis)."""
    patch_stats_every_epochs: int | None = None
    """Training only: also record the first batch of every E-th epoch and of the last."""
    loggers: tuple[str, ...] = ("mlflow", "tensorboard")
    tracking_uri: str | None = None
    experiment_name: str = "ptycho_torch"
    run_name: str | None = None
    system_metrics_interval_s: float = 5.0
    """Seconds between system-metrics samples (CPU, memory, GPU) in the MLflow run; 0: off."""
    log_checkpoints: bool = True
    """Training only: upload the Lightning checkpoints (last, best) as run artifacts."""
    register_model: str | None = None
    """Training only: register the run's model under this name (models:/<name>/<version>)."""

    def __post_init__(self):
        object.__setattr__(self, "accelerator", Accelerator(self.accelerator))
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.patch_stats_limit < 1:
            raise ValueError(f"patch_stats_limit must be >= 1, got {self.patch_stats_limit}")
        if self.patch_stats_every_epochs is not None and self.patch_stats_every_epochs < 1:
            raise ValueError("patch_stats_every_epochs must be >= 1, got "
                             f"{self.patch_stats_every_epochs}")
        if self.system_metrics_interval_s < 0:
            raise ValueError("system_metrics_interval_s must be >= 0, got "
                             f"{self.system_metrics_interval_s}")
        object.__setattr__(self, "loggers", tuple(self.loggers))


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run used; saved as config.json beside the weights.

    Facts spanning configs are checked here: the data and the model agree on N, C and
    nphotons, and grouping uses the execution's seed."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    train_data_file: str = ""
    test_data_file: str | None = None

    def __post_init__(self):
        data, model = self.data, self.model
        if data.patch_size_px != model.patch_size_px:
            raise ValueError(f"data N {data.patch_size_px} != model N {model.patch_size_px}")
        if data.n_channels != model.n_channels:
            raise ValueError(f"gridsize {data.gridsize} gives {data.n_channels} channels but "
                             f"the model has {model.n_channels}")
        if data.nphotons is not None and data.nphotons != model.nphotons:
            raise ValueError(f"data nphotons {data.nphotons:g} != model nphotons "
                             f"{model.nphotons:g}")
        if data.seed != self.execution.seed:
            raise ValueError(f"data seed {data.seed} != execution seed {self.execution.seed}")

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
