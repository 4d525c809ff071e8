"""python -m ptycho_torch.train: train PtychoPINN on a scan (self-supervised, physics loss).

The output folder holds everything inference needs: model.pt (weights, probe included) and
config.json (the full RunConfig), plus Lightning checkpoints under checkpoints/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ptycho_torch.cli.shared import (
    UsageError,
    add_execution_args,
    build_execution_config_from_args,
    check_strategy,
    configure_logging,
    positive_float,
    positive_int,
    resolve_device,
    run_cli,
)
from ptycho_torch.config import DECODERS, LossMode, RunConfig, flatten
from ptycho_torch.config_factory import build_run_config
from ptycho_torch.data import PtychoDataModule, ScanData, load_scan
from ptycho_torch.inference import CONFIG_FILE, MODEL_FILE, check_scan_for_model
from ptycho_torch.io import atomic_path, atomic_write_json, atomic_write_text, record_provenance
from ptycho_torch.model import PtychoLightning
from tracking.loggers import SIDECAR_FILE, TrackedRun, command_line

logger = logging.getLogger("ptycho_torch.train")  # not "__main__" under python -m

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary name beside the target, then renamed.

    Lightning's own save stages the file in the system temp folder and moves it; across file
    systems (a node-local /tmp, a shared output disk) that move is a copy, and a kill during
    it leaves a truncated .ckpt. Here the rename is always within one folder."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_path(path, suffix=".ckpt") as tmp:
            torch.save(checkpoint, tmp)


def process_rank() -> int:
    """Global rank of this process: 0 unless a launcher (Lightning's DDP, torchrun, SLURM)
    started it as a worker. Known before the Trainer exists, so workers skip tracking."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def build_trainer(config: RunConfig, output_dir: Path, device: str, loggers=(),
                  callbacks=()) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    ex = config.execution
    checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", save_last=True)
    return L.Trainer(
        max_epochs=config.training.max_epochs,
        max_time=(None if config.training.max_time_minutes is None
                  else timedelta(minutes=config.training.max_time_minutes)),
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=ex.devices,
        strategy=ex.strategy,
        deterministic=ex.deterministic,
        logger=list(loggers) or False,
        callbacks=[checkpoint, *callbacks],
        enable_progress_bar=not ex.quiet,
        enable_model_summary=not ex.quiet,
        log_every_n_steps=5,
        default_root_dir=output_dir,
        plugins=[AtomicCheckpointIO()],
    )


def run_training(config: RunConfig, scan: ScanData, output_dir: str | Path, device: str = "cpu",
                 loggers=(), callbacks=(), datamodule: PtychoDataModule | None = None,
                 ckpt_path: Path | None = None) -> dict:
    """Fit the model (continuing from ``ckpt_path`` when given); write model.pt and
    config.json; return a summary dict."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.execution.seed, workers=True, verbose=False)
    if datamodule is None:
        datamodule = PtychoDataModule(scan, config.data, config.training.batch_size,
                                      config.training.val_fraction,
                                      config.execution.num_workers)
    has_validation = len(datamodule.val_indices) > 0
    module = PtychoLightning(config.model, config.training, torch.from_numpy(scan.probe),
                             has_validation)
    trainer = build_trainer(config, output_dir, device, loggers, callbacks)
    if not has_validation:
        trainer.limit_val_batches = 0
    logger.info("training on %d groups (%d validation), gridsize %d, N %d, %s, device %s",
                len(datamodule.train_indices), len(datamodule.val_indices),
                config.data.gridsize, config.data.patch_size_px, config.model.loss_mode.value,
                device)
    started = time.perf_counter()
    if ckpt_path is None:
        trainer.fit(module, datamodule=datamodule)
    else:
        logger.info("resuming from %s", ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - started
    if trainer.global_rank == 0:
        with atomic_path(output_dir / MODEL_FILE) as tmp:
            torch.save(module.model.state_dict(), tmp)
        atomic_write_json(output_dir / CONFIG_FILE, config.to_dict())
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    return {"seconds": seconds, "epochs": trainer.current_epoch,
            "global_step": trainer.global_step, "final_metrics": metrics,
            "n_train_groups": len(datamodule.train_indices),
            "n_val_groups": len(datamodule.val_indices),
            "object_gain": float(module.model.log_object_gain.detach().exp())}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.train",
        description="Train PtychoPINN (physics-informed, self-supervised) on an NPZ scan.")
    data = parser.add_argument_group("data")
    data.add_argument("--train_data_file", "--train-data-file", required=True,
                      help="NPZ scan to train on (data contract in DESIGN.md)")
    data.add_argument("--test_data_file", "--test-data-file", default=None,
                      help="optional NPZ scan reconstructed and scored after training, into "
                           "<output_dir>/test_reconstruction")
    data.add_argument("--output_dir", "--output-dir", required=True,
                      help="folder for model.pt, config.json, checkpoints/ and analysis/")
    data.add_argument("--n_images", "--n-images", type=positive_int, default=None,
                      help="number of groups to train on (default: one per scan point)")
    data.add_argument("--gridsize", type=positive_int, default=1,
                      help="patterns per group side: C = gridsize^2 channels (default: 1)")
    data.add_argument("--neighbors", type=positive_int, default=4,
                      help="K nearest neighbours a group is drawn from, K >= gridsize^2 "
                           "(default: %(default)s)")
    data.add_argument("--nphotons", type=positive_float, default=None,
                      help="photons per pattern for the physics scale (default: the file's "
                           "_metadata, else the data's own mean counts)")
    model = parser.add_argument_group("model and optimization")
    model.add_argument("--torch-loss-mode", "--torch_loss_mode", default="poisson",
                       choices=[m.value for m in LossMode],
                       help="Poisson NLL on counts or MAE on amplitudes (default: %(default)s)")
    model.add_argument("--max_epochs", "--max-epochs", type=positive_int, default=50,
                       help="training epochs (default: %(default)s)")
    model.add_argument("--max-time", "--max_time", type=positive_float, default=None,
                       help="wall-clock budget in minutes: training stops after the batch "
                            "that crosses it, or at --max_epochs, whichever comes first "
                            "(default: no limit)")
    model.add_argument("--batch_size", "--batch-size", type=positive_int, default=16,
                       help="groups per batch (default: %(default)s)")
    model.add_argument("--learning-rate", "--learning_rate", type=positive_float, default=1e-3,
                       help="Adam learning rate; halved on plateau (default: %(default)g)")
    model.add_argument("--val-fraction", type=float, default=0.05,
                       help="fraction of groups held out for validation (default: %(default)s)")
    model.add_argument("--n-filters-scale", type=positive_int, default=2,
                       help="network width multiplier; 2 is the reference (default: %(default)s)")
    model.add_argument("--decoder", choices=DECODERS, default="reference",
                       help="decoder preset: 'reference' (the reference's: a linear 3x3 head "
                            "is the only layer at the output resolution) or 'fine' (one more "
                            "conv-conv block at that resolution, for pixel-scale detail) "
                            "(default: %(default)s)")
    model.add_argument("--probe-scale", type=positive_float, default=4.0,
                       help="reference probe normalization divisor (default: %(default)s)")
    model.add_argument("--object-gain-trainable", action=argparse.BooleanOptionalAction,
                       default=True,
                       help="train the global object-amplitude gain (default: on)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --output_dir from "
                             "checkpoints/last.ckpt, with the same data and model flags: "
                             "training ends at --max_epochs as if never stopped, the same "
                             "MLflow run (from tracking.json) goes on, and patch-stats limits "
                             "count from the first start")
    add_execution_args(parser, "train")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point; reads sys.argv when argv is None; returns 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    prog = "python -m ptycho_torch.train"

    def main() -> int:
        execution = build_execution_config_from_args(args, "train")
        configure_logging(execution.quiet)
        device = resolve_device(execution.accelerator)
        check_strategy(execution.strategy)
        if not 0 <= args.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
        scan = load_scan(args.train_data_file)
        test_scan = load_scan(args.test_data_file) if args.test_data_file else None
        try:
            config = build_run_config(args, scan, execution)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        out = Path(args.output_dir)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--output_dir {out} exists and is not a directory")
        # grouping errors (too few points, too many groups) surface before anything is written
        datamodule = PtychoDataModule(scan, config.data, config.training.batch_size,
                                      config.training.val_fraction, execution.num_workers)
        if test_scan is not None:  # a test scan this model cannot take fails now, not after
            check_scan_for_model(test_scan, config)
        ckpt_path = resume_checkpoint(out, config) if args.resume else None
        if process_rank() != 0:
            # a DDP worker started by Lightning: it trains its shard; rank 0 alone tracks,
            # records patch statistics and writes the output files
            run_training(config, scan, out, device, (), (), datamodule, ckpt_path)
            return 0
        command = command_line(prog, argv)
        sidecar = _read_sidecar(out) if args.resume else {}
        with TrackedRun(execution.loggers, "train", out, command, execution.tracking_uri,
                        execution.experiment_name,
                        execution.run_name or sidecar.get("run_name"), device, execution.seed,
                        resume_run_id=sidecar.get("run_id")) as run:
            out.mkdir(parents=True, exist_ok=True)
            train_outputs(run, config, scan, test_scan, out, device, datamodule, command,
                          ckpt_path)
        return 0

    return run_cli(main, prog)


def resume_checkpoint(out: Path, config: RunConfig) -> Path:
    """The checkpoint --resume continues from, after checking the run's saved config agrees
    with this command on everything but the epoch and time limits and execution settings."""
    ckpt = out / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise UsageError(f"--resume: nothing to continue in {out} ({ckpt} not found)")
    saved_path = out / CONFIG_FILE
    if saved_path.is_file():
        # through RunConfig, so a field added since that run compares at its default
        try:
            saved = RunConfig.load(saved_path).to_dict()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"--resume: {saved_path} is unreadable "
                             f"({type(exc).__name__}: {exc})") from exc
        now = config.to_dict()
        for key in ("max_epochs", "max_time_minutes"):
            saved["training"].pop(key, None)
            now["training"].pop(key, None)
        differ = [f"{section}.{key}" for section in ("data", "model", "training")
                  for key in now[section] if saved[section].get(key) != now[section][key]]
        if differ:
            raise UsageError(f"--resume: {saved_path} was started with other settings for "
                             f"{', '.join(differ)}; give the same data and model flags")
    return ckpt


def _read_sidecar(out: Path) -> dict:
    path = out / SIDECAR_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume: {path} is unreadable ({exc})") from exc


def train_outputs(run: TrackedRun, config: RunConfig, scan: ScanData,
                  test_scan: ScanData | None, out: Path, device: str,
                  datamodule: PtychoDataModule, command: list[str],
                  ckpt_path: Path | None = None) -> dict:
    """Train inside a tracked run; log params, datasets, metrics and artifacts."""
    from ptycho_torch.physics import intensity_scale

    execution = config.execution
    run.log_params({**flatten(config.to_dict()),
                    "physics_scale": intensity_scale(config.model.nphotons,
                                                     config.model.patch_size_px),
                    "device": device})
    run.log_dataset(scan.path, "training")
    if test_scan is not None:
        run.log_dataset(test_scan.path, "evaluation")
    callbacks: list = []
    recorder = None
    if execution.log_patch_stats:
        from tracking.callbacks import PatchStatsCallback
        from tracking.patch_stats import PatchStatsRecorder

        recorder = PatchStatsRecorder(execution.patch_stats_limit,
                                      execution.patch_stats_dir or out / "analysis")
        recorder.listeners.append(run.log_patch_record)
        callbacks.append(PatchStatsCallback(recorder))
    if run.loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    run.write_sidecar(out)
    atomic_write_json(out / CONFIG_FILE, config.to_dict())  # early, so --resume can check it
    summary = run_training(config, scan, out, device, run.loggers, callbacks, datamodule,
                           ckpt_path)
    summary["resumed_from"] = str(ckpt_path) if ckpt_path is not None else None
    summary["mlflow_run_id"] = run.run_id
    produced = [out / MODEL_FILE, out / CONFIG_FILE, out / "train_summary.json",
                out / SIDECAR_FILE, *sorted((out / "checkpoints").glob("*.ckpt"))]
    if test_scan is not None:
        from ptycho_torch.inference import run_inference

        test_dir = out / "test_reconstruction"
        summary["test"] = run_inference(out, test_scan, test_dir, device=device,
                                        progress=not execution.quiet)
        if "metrics" in summary["test"]:
            run.log_metrics({f"test/{k}": v for k, v in summary["test"]["metrics"].items()})
        for name in ("reconstruction.png", "reconstruction.npz", "metrics.json"):
            run.log_artifact(test_dir / name, "test_reconstruction")
            produced.append(test_dir / name)
        run.log_images([test_dir / "reconstruction.png"])
    atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    for name in (CONFIG_FILE, "train_summary.json"):
        run.log_artifact(out / name)
    if recorder is not None:
        run.publish_patch_stats(recorder, command)
    record_provenance(out, command, produced)
    return summary


if __name__ == "__main__":
    sys.exit(cli_main())
