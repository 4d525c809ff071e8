"""A scan and a few choices -> a RunConfig (N from the probe, nphotons, channels)."""

from __future__ import annotations

from ptycho_torch.config import (
    DataConfig,
    Decoder,
    ExecutionConfig,
    LossMode,
    ModelConfig,
    RunConfig,
    TrainingConfig,
)
from ptycho_torch.data import ScanData, resolve_nphotons


def build_run_config(scan: ScanData, *, gridsize: int = 1, n_neighbors: int = 4,
                     n_groups: int | None = None, nphotons: float | None = None,
                     loss_mode: LossMode = LossMode.POISSON, n_filters_scale: int = 2,
                     probe_scale: float = 4.0, object_gain_trainable: bool = True,
                     decoder: Decoder = Decoder.REFERENCE,
                     training: TrainingConfig | None = None,
                     execution: ExecutionConfig | None = None,
                     test_data_file: str | None = None) -> RunConfig:
    """Training run config for ``scan``: patch size N from its probe, C = gridsize^2,
    nphotons from the argument, else the scan's _metadata, else its mean counts."""
    execution = execution or ExecutionConfig()
    n = scan.patch_size
    nphotons = resolve_nphotons(scan, nphotons)
    data = DataConfig(patch_size_px=n, gridsize=gridsize, n_neighbors=n_neighbors,
                      n_groups=n_groups, nphotons=nphotons, seed=execution.seed)
    model = ModelConfig(patch_size_px=n, n_channels=data.n_channels,
                        n_filters_scale=n_filters_scale, probe_scale=probe_scale,
                        loss_mode=loss_mode, nphotons=nphotons,
                        object_gain_trainable=object_gain_trainable, decoder=decoder)
    return RunConfig(data=data, model=model, training=training or TrainingConfig(),
                     execution=execution, train_data_file=str(scan.path),
                     test_data_file=test_data_file)
