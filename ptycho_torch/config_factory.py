"""CLI overrides + scan data -> config payloads (N from the probe, nphotons, channels)."""

from __future__ import annotations

import argparse

from ptycho_torch.config import (
    DataConfig,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
)
from ptycho_torch.data import ScanData, resolve_nphotons


def build_run_config(args: argparse.Namespace, scan: ScanData,
                     execution: ExecutionConfig) -> RunConfig:
    """Training run config: patch size from the probe, nphotons from flag/metadata/data."""
    n = scan.patch_size
    nphotons = resolve_nphotons(scan, args.nphotons)
    data = DataConfig(patch_size_px=n, gridsize=args.gridsize, n_neighbors=args.neighbors,
                      n_groups=args.n_images, nphotons=nphotons, seed=execution.seed)
    model = ModelConfig(patch_size_px=n, n_channels=data.n_channels,
                        n_filters_scale=args.n_filters_scale, probe_scale=args.probe_scale,
                        loss_mode=args.torch_loss_mode, nphotons=nphotons,
                        object_gain_trainable=args.object_gain_trainable,
                        decoder=args.decoder)
    training = TrainingConfig(max_epochs=args.max_epochs,
                              max_time_minutes=getattr(args, "max_time", None),
                              batch_size=args.batch_size,
                              learning_rate=args.learning_rate, val_fraction=args.val_fraction)
    return RunConfig(data=data, model=model, training=training, execution=execution,
                     train_data_file=str(scan.path), test_data_file=args.test_data_file)


def build_inference_config(args: argparse.Namespace) -> InferenceConfig:
    return InferenceConfig(inference_batch_size=args.inference_batch_size,
                           stitch_crop_px=args.stitch_crop,
                           stitch_weight=args.stitch_weight)
