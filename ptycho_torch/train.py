"""python -m ptycho_torch.train: train PtychoPINN on a scan (self-supervised, physics loss).

A thin face over :mod:`ptycho_torch.workflows`: parse, build the config, open the tracked
run, fit, publish. The output folder holds everything inference needs: model.pt (weights,
probe included) and config.json (the full RunConfig), plus Lightning checkpoints under
checkpoints/.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # a CLI process: MLflow's start-up runs in the tracking agent, on another core, while
    # this process imports torch and Lightning below (docs/tracking.md, "What tracking costs")
    from tracking.agent import prestart

    prestart(sys.argv[1:])

import argparse
import json
import logging
from pathlib import Path

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
from ptycho_torch.config import Decoder, LossMode, RunConfig, TrainingConfig, flatten
from ptycho_torch.config_factory import build_run_config
from ptycho_torch.data import ScanData, load_scan
from ptycho_torch.workflows import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    MODEL_FILE,
    build_datamodule,
    fit,
    group_scan,
    process_rank,
    reconstruct,
)
from tracking.files import atomic_write_json, atomic_write_text
from tracking.provenance import command_line, record_provenance
from tracking.run import SIDECAR_FILE, TrackedRun, read_sidecar

logger = logging.getLogger("ptycho_torch.train")  # not "__main__" under python -m

PROG = "python -m ptycho_torch.train"
LAST_CHECKPOINT = Path(CHECKPOINT_DIR) / "last.ckpt"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.train",
        description="Train PtychoPINN (physics-informed, self-supervised) on an NPZ scan.")
    _add_data_args(parser.add_argument_group("data"))
    _add_model_args(parser.add_argument_group("model and optimization"))
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --output_dir from "
                             "checkpoints/last.ckpt, with the same data and model flags: "
                             "training ends at --max_epochs as if never stopped, the same "
                             "MLflow run (from tracking.json) goes on, and patch-stats limits "
                             "count from the first start")
    add_execution_args(parser, "train")
    return parser

def _add_data_args(data: argparse._ArgumentGroup) -> None:
    data.add_argument("--train_data_file", "--train-data-file", required=True,
                      help="NPZ scan to train on (data contract: docs/data_contract.md)")
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

def _add_model_args(model: argparse._ArgumentGroup) -> None:
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
    model.add_argument("--decoder", choices=[d.value for d in Decoder], default="reference",
                       help="decoder preset: 'reference' (the reference's: a linear 3x3 head "
                            "is the only layer at the output resolution) or 'fine' (one more "
                            "conv-conv block at that resolution, for pixel-scale detail) "
                            "(default: %(default)s)")
    model.add_argument("--probe-scale", type=positive_float, default=4.0,
                       help="reference probe normalization divisor (default: %(default)s)")
    model.add_argument("--object-gain-trainable", action=argparse.BooleanOptionalAction,
                       default=True,
                       help="train the global object-amplitude gain (default: on)")


def config_from_args(args: argparse.Namespace, scan: ScanData, execution) -> RunConfig:
    """The run's config from parsed flags; a value the config refuses is a UsageError."""
    try:
        training = TrainingConfig(max_epochs=args.max_epochs, max_time_minutes=args.max_time,
                                  batch_size=args.batch_size, learning_rate=args.learning_rate,
                                  val_fraction=args.val_fraction)
        return build_run_config(
            scan, gridsize=args.gridsize, n_neighbors=args.neighbors, n_groups=args.n_images,
            nphotons=args.nphotons, loss_mode=args.torch_loss_mode,
            n_filters_scale=args.n_filters_scale, probe_scale=args.probe_scale,
            object_gain_trainable=args.object_gain_trainable, decoder=args.decoder,
            training=training, execution=execution, test_data_file=args.test_data_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point; reads sys.argv when argv is None; returns 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)

    def main() -> int:
        execution = build_execution_config_from_args(args, "train")
        configure_logging(execution.quiet)
        device = resolve_device(execution.accelerator)
        check_strategy(execution.strategy)
        scan = load_scan(args.train_data_file)
        test_scan = load_scan(args.test_data_file) if args.test_data_file else None
        config = config_from_args(args, scan, execution)
        out = Path(args.output_dir)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--output_dir {out} exists and is not a directory")
        # grouping errors (too few points, too many groups) surface before anything is written
        datamodule = build_datamodule(config, scan)
        if test_scan is not None:  # a test scan this model cannot take fails now, not after
            group_scan(test_scan, config)
        ckpt_path = resume_checkpoint(out, config) if args.resume else None
        if process_rank() != 0:
            # a DDP worker started by Lightning: it trains its shard; rank 0 alone tracks,
            # records patch statistics and writes the output files
            fit(config, scan, out, device=device, datamodule=datamodule, ckpt_path=ckpt_path)
            return 0
        command = command_line(PROG, argv)
        sidecar = _read_sidecar(out) if args.resume else {}
        with TrackedRun(kind="train", output_dir=out, command=command,
                        loggers=execution.loggers, tracking_uri=execution.tracking_uri,
                        experiment_name=execution.experiment_name,
                        run_name=execution.run_name or sidecar.get("run_name"), device=device,
                        seed=execution.seed, parent_run_id=args.parent_run_id,
                        resume_run_id=sidecar.get("run_id"),
                        system_metrics_interval=execution.system_metrics_interval_s) as run:
            out.mkdir(parents=True, exist_ok=True)
            train_outputs(run, config, scan, test_scan, out, device, datamodule, command,
                          ckpt_path)
        return 0

    return run_cli(main, PROG)


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
    try:
        return read_sidecar(out)
    except ValueError as exc:
        raise UsageError(f"--resume: {exc}") from exc


def _training_callbacks(run: TrackedRun, config: RunConfig, out: Path) -> tuple[list, object]:
    """Patch-stats tap (when asked); learning-rate monitor and per-epoch timing and memory
    (when tracking)."""
    callbacks: list = []
    recorder = None
    execution = config.execution
    if execution.log_patch_stats:
        from tracking.callbacks import PatchStatsCallback
        from tracking.patch_stats import PatchStatsRecorder

        recorder = PatchStatsRecorder(execution.patch_stats_limit,
                                      execution.patch_stats_dir or out / "analysis")
        recorder.listeners.append(run.log_patch_record)
        callbacks.append(PatchStatsCallback(recorder, execution.patch_stats_every_epochs))
    if run.loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        from tracking.telemetry import RunTelemetryCallback

        callbacks += [LearningRateMonitor(logging_interval="epoch"), RunTelemetryCallback(run)]
    return callbacks, recorder


def _score_test_scan(run: TrackedRun, result, test_scan: ScanData, out: Path, device: str,
                     quiet: bool) -> tuple[dict, list[Path]]:
    """Reconstruct the --test_data_file scan with the trained model into
    test_reconstruction/; log its metrics and files."""
    test_dir = out / "test_reconstruction"
    rec = reconstruct(result.model, test_scan, result.config, device=device,
                      progress=not quiet)
    written = rec.save(test_dir)
    if rec.metrics is not None:
        run.log_final_metrics({f"test/{k}": v for k, v in rec.metrics.items()})
    for name in ("reconstruction.png", "reconstruction.npz", "metrics.json"):
        run.log_artifact(test_dir / name, "test_reconstruction")
    run.log_images([test_dir / "reconstruction.png"])
    return {**rec.summary(), "output_dir": str(test_dir)}, written


def train_outputs(run: TrackedRun, config: RunConfig, scan: ScanData,
                  test_scan: ScanData | None, out: Path, device: str, datamodule,
                  command: list[str], ckpt_path: Path | None = None) -> dict:
    """Train inside a tracked run; log params, datasets, metrics and artifacts."""
    from ptycho_torch.physics import intensity_scale

    run.log_params({**flatten(config.to_dict()),
                    "physics_scale": intensity_scale(config.model.nphotons,
                                                     config.model.patch_size_px),
                    "device": device})
    run.log_dataset(scan.path, "training")
    if test_scan is not None:
        run.log_dataset(test_scan.path, "evaluation")
    callbacks, recorder = _training_callbacks(run, config, out)
    run.write_sidecar(out)
    atomic_write_json(out / CONFIG_FILE, config.to_dict())  # early, so --resume can check it
    result = fit(config, scan, out, device=device, loggers=run.loggers, callbacks=callbacks,
                 datamodule=datamodule, ckpt_path=ckpt_path)
    summary = {**result.summary(), "resumed_from": None if ckpt_path is None else str(ckpt_path),
               "mlflow_run_id": run.run_id}
    checkpoints = sorted((out / CHECKPOINT_DIR).glob("*.ckpt"))
    run.remember_final_metrics(result.final_metrics)
    summary["registered_model_version"] = run.log_model(
        [out / MODEL_FILE, out / CONFIG_FILE],
        checkpoints if config.execution.log_checkpoints else [],
        register_as=config.execution.register_model)
    produced = [out / MODEL_FILE, out / CONFIG_FILE, out / "train_summary.json",
                out / SIDECAR_FILE, *checkpoints]
    if test_scan is not None:
        summary["test"], written = _score_test_scan(run, result, test_scan, out, device,
                                                    config.execution.quiet)
        produced += written
    atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    for name in (CONFIG_FILE, "train_summary.json"):
        run.log_artifact(out / name)
    if recorder is not None:
        run.publish_patch_stats(recorder, command)
    record_provenance(out, command, produced)
    return summary


if __name__ == "__main__":
    sys.exit(cli_main())
