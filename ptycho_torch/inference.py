"""python -m ptycho_torch.inference: reconstruct a scan with a trained model.

A thin face over :mod:`ptycho_torch.workflows`: parse, load, open the tracked run,
reconstruct, publish. Writes the stitched complex object (reconstruction.npz), amplitude
and phase PNGs (ground truth beside them when the scan has one) and metrics.json (when it
has objectGuess).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # a CLI process: MLflow's start-up runs in the tracking agent, on another core, while
    # this process imports torch and Lightning below (docs/tracking.md, "What tracking costs")
    from tracking.agent import prestart

    prestart(sys.argv[1:])

import argparse
import logging
import tempfile
from pathlib import Path

from ptycho_torch.cli.shared import (
    UsageError,
    add_execution_args,
    build_execution_config_from_args,
    configure_logging,
    positive_int,
    resolve_device,
    run_cli,
)
from ptycho_torch.config import InferenceConfig, StitchWeight, flatten
from ptycho_torch.data import load_scan
from ptycho_torch.workflows import group_scan, load_model, reconstruct
from tracking.provenance import command_line, record_provenance
from tracking.run import SIDECAR_FILE, TrackedRun, read_sidecar

logger = logging.getLogger("ptycho_torch.inference")  # not "__main__" under python -m

PROG = "python -m ptycho_torch.inference"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.inference",
        description="Reconstruct a scan with a trained PtychoPINN; stitch, save, score.")
    parser.add_argument("--model_path", "--model-path", required=True,
                        help="training output folder (holds model.pt and config.json), or "
                             "the model of a tracked training: runs:/<run id> or "
                             "models:/<name>/<version> (downloaded from --tracking-uri; "
                             "weights only, never a pickled module)")
    parser.add_argument("--test_data", "--test-data", required=True,
                        help="NPZ scan to reconstruct (data contract: docs/data_contract.md)")
    parser.add_argument("--output_dir", "--output-dir", required=True,
                        help="folder for reconstruction.npz, reconstruction.png, metrics.json")
    parser.add_argument("--n_images", "--n-images", type=positive_int, default=None,
                        help="groups to reconstruct (default: one per scan point)")
    parser.add_argument("--inference-batch-size", "--inference_batch_size", type=positive_int,
                        default=256, help="groups per forward pass; memory stays flat as the "
                                          "scan grows (default: %(default)s)")
    parser.add_argument("--stitch-crop", type=positive_int, default=None,
                        help="central crop of each patch used in stitching, px "
                             "(default: 20 at N = 64); with --stitch-weight probe it "
                             "still sets the region scored and shown")
    parser.add_argument("--stitch-weight", choices=[w.value for w in StitchWeight], default="crop",
                        help="how overlapping patches are averaged: 'crop' (the reference: "
                             "central crops, plain average) or 'probe' (whole patches "
                             "weighted by the probe intensity |P|^2, where each one is best "
                             "determined) (default: %(default)s)")
    parser.add_argument("--group-indices", default=None, metavar="NPY",
                        help="reconstruct these groups instead of drawing them: a .npy of "
                             "integer pattern indices, shape (groups, gridsize^2), e.g. the "
                             "TF reference's inference_groups.npy, so that both "
                             "implementations' patch statistics describe the same patterns "
                             "(docs/parity.md); --n_images keeps the first ones")
    parser.add_argument("--debug-dump", default=None,
                        help="folder for the forward-parity debug dump (patch grid, offsets, "
                             "stats, canvas)")
    add_execution_args(parser, "inference")
    return parser


def inference_config_from_args(args: argparse.Namespace) -> InferenceConfig:
    return InferenceConfig(n_groups=args.n_images,
                           inference_batch_size=args.inference_batch_size,
                           stitch_crop_px=args.stitch_crop, stitch_weight=args.stitch_weight)


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point; reads sys.argv when argv is None; returns 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)

    def main() -> int:
        execution = build_execution_config_from_args(args, "inference")
        configure_logging(execution.quiet)
        device = resolve_device(execution.accelerator)
        with tempfile.TemporaryDirectory(prefix="ptycho-model-") as download:
            model_dir, link = _model_folder(args.model_path, execution.tracking_uri, download)
            model, config = load_model(model_dir, device)
        scan = load_scan(args.test_data)
        indices = _group_indices(args.group_indices)
        grouped = group_scan(scan, config, args.n_images, indices)  # before anything exists
        out = Path(args.output_dir)
        for flag, folder in (("--output_dir", out), ("--debug-dump", args.debug_dump)):
            if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
                raise UsageError(f"{flag} {folder} exists and is not a directory")
        command = command_line(PROG, argv)
        with TrackedRun(kind="inference", output_dir=out, command=command,
                        loggers=execution.loggers, tracking_uri=execution.tracking_uri,
                        experiment_name=execution.experiment_name, run_name=execution.run_name,
                        device=device, seed=execution.seed, parent_run_id=args.parent_run_id,
                        tags=link,
                        system_metrics_interval=execution.system_metrics_interval_s) as run:
            inference_outputs(run, args, execution, model, config, scan, grouped, out, device,
                              command)
        return 0

    return run_cli(main, PROG)


def _group_indices(path: str | None):
    """--group-indices: the (groups, C) index array, or None; unreadable is a UsageError."""
    if path is None:
        return None
    import numpy as np

    from tracking.untrusted import check_npy_file

    try:
        check_npy_file(path)  # often the reference's file: sized before numpy allocates
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--group-indices {path}: not a readable .npy array "
                         f"({str(exc).splitlines()[0]})") from exc


def _model_folder(model_path: str, tracking_uri: str | None, download: str
                  ) -> tuple[Path, dict[str, str]]:
    """The local folder holding model.pt and config.json, and the tags linking this run to
    the training: a training output folder as given, or ``runs:/<run id>`` /
    ``models:/<name>/<version>`` downloaded from the tracking store into ``download``."""
    from tracking.models import download_model, is_model_uri

    if not is_model_uri(model_path):
        return Path(model_path), _training_link(model_path)
    try:
        return download_model(model_path, download, tracking_uri)
    except ValueError as exc:
        raise UsageError(f"--model_path {exc}") from exc


def _training_link(model_dir: str | Path) -> dict[str, str]:
    """Tags linking an inference run to the training run that made its model."""
    tags = {"model_path": str(Path(model_dir).resolve())}
    sidecar = read_sidecar(model_dir) if (Path(model_dir) / SIDECAR_FILE).is_file() else {}
    if sidecar:
        tags["train_run_id"] = sidecar.get("run_id", "")
    return tags


def _recorder(run: TrackedRun, args: argparse.Namespace, execution, out: Path):
    """The patch-stats recorder when --log-patch-stats is on (also into --debug-dump)."""
    if not execution.log_patch_stats:
        return None
    from tracking.patch_stats import PatchStatsRecorder

    extra = (Path(args.debug_dump),) if args.debug_dump else ()
    recorder = PatchStatsRecorder(execution.patch_stats_limit,
                                  execution.patch_stats_dir or out / "analysis", extra)
    recorder.listeners.append(run.log_patch_record)
    return recorder


def inference_outputs(run: TrackedRun, args: argparse.Namespace, execution, model, config,
                      scan, grouped, out: Path, device: str, command: list[str]) -> dict:
    """Reconstruct inside a tracked run; write and log params, dataset, metrics, files."""
    inference = inference_config_from_args(args)
    recorder = _recorder(run, args, execution, out)
    params = {k: v for k, v in inference.__dict__.items() if k != "n_groups"}
    run.log_params({**flatten({"model": config.model.__dict__, "data": config.data.__dict__,
                               "inference": params}),
                    "inference.n_images": args.n_images, "device": device,
                    "inference.group_indices": args.group_indices,
                    "model_path": str(args.model_path)})
    run.log_dataset(scan.path, "inference")
    dump = None
    if args.debug_dump is not None:
        from ptycho_torch.debug_dump import DebugDump

        dump = DebugDump(args.debug_dump)
    rec = reconstruct(model, scan, config, inference, device=device, grouped=grouped,
                      recorder=recorder, on_batch=dump.on_batch if dump else None,
                      progress=not execution.quiet)
    rec.save(out)
    logger.info("wrote %s", out)
    run.log_metrics({"inference/seconds": rec.seconds,
                     "inference/patterns_per_s": rec.n_patterns / max(rec.seconds, 1e-9)})
    if rec.metrics is not None:
        run.log_final_metrics(rec.metrics)
    run.write_sidecar(out)
    produced = [out / name for name in ("reconstruction.npz", "reconstruction.png",
                                        "metrics.json", SIDECAR_FILE)]
    for path in produced:
        run.log_artifact(path)
    run.log_images([out / "reconstruction.png"])
    record_provenance(out, command, produced)
    if recorder is not None:
        run.publish_patch_stats(recorder, command)
    if dump is not None:
        _publish_debug_dump(run, dump, rec, config, out, recorder, command)
    return {**rec.summary(), "output_dir": str(out)}


def _publish_debug_dump(run: TrackedRun, dump, rec, config, out: Path, recorder,
                        command: list[str]) -> None:
    """--debug-dump: write the dump's files, record their provenance, log them."""
    debug_files = dump.write(rec.object, rec.weight, config.model.patch_size_px, out)
    record_provenance(dump.folder, command, debug_files)
    if recorder is not None:
        debug_files += [p for p in recorder.paths if p.parent == dump.folder]
    for path in debug_files:
        run.log_artifact(path, "forward_parity_debug")


if __name__ == "__main__":
    sys.exit(cli_main())
