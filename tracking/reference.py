"""python -m tracking.reference: another implementation's reference record as a tracked run.

A reference record (docs/reference_record.md: ``reference_record.json``, optionally with
``reconstruction.npz`` beside it) becomes an MLflow run, with TensorBoard event files, laid
out as our own runs are: params under our config names, ``patch/...`` metrics and
histograms from its records, ``analysis/torch_patch_stats.json``, and, given the scan, the
reconstruction scored with our metrics and drawn as our inference draws it. Then
``python -m tracking.compare TORCH_RUN REFERENCE_RUN`` works as for any two runs.

Also here: :func:`reference_column`, what ``tracking.compare --reference PATH`` reads (a
records JSON, a reference record, or a folder holding one and/or a debug dump).

Import rule: no module-level import of ptycho_torch. :func:`cli_main` alone imports the
scan loader, the scoring function and the picture from ptycho_torch, lazily, and hands them
to :func:`register` as a :class:`Library`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tracking.compare import summarize_records
from tracking.patch_stats import BATCH_KEYS, STATS_FILE
from tracking.redaction import redact
from tracking.tf_dump import DumpError, is_dump_folder, read_dump_folder
from tracking.untrusted import UntrustedFileError, check_npz_members, confined_path, read_json

PROG = "python -m tracking.reference"
FORMAT = "ptycho-reference-record"
FORMAT_VERSION = 1
RECORD_FILE = "reference_record.json"
RECONSTRUCTION_FILE = "reconstruction.npz"
PRODUCER_PNG = "reconstruction.png"
# the record's params -> the names our train runs log them under (docs/tracking.md, Params)
PARAM_NAMES = {"N": ("model.patch_size_px", "data.patch_size_px"),
               "gridsize": ("data.gridsize",), "groups": ("data.n_groups",),
               "batch": ("training.batch_size",), "epochs": ("training.max_epochs",),
               "nphotons": ("data.nphotons", "model.nphotons")}
logger = logging.getLogger(__name__)
RECORD_NUMBERS = ("global_mean", "global_std", "var_zero_mean", "mean_input_scale",
                  "physics_scale", "object_gain")


class ReferenceError(ValueError):
    """Bad reference input: one line for the user, exit status 2, nothing created."""


class Library(NamedTuple):
    """What registering takes from ptycho_torch (imported by :func:`cli_main` only):
    ``load_scan(path) -> ScanData``, ``evaluate(obj, weight, gt, crop) -> metrics``,
    ``default_crop(N) -> px`` and the ``Reconstruction`` class whose ``save`` writes
    reconstruction.npz/.png and metrics.json as our inference does."""

    load_scan: Any
    evaluate: Any
    default_crop: Any
    reconstruction: Any


# ----------------------------------------------------------------------------- reading

def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except UntrustedFileError as exc:
        raise ReferenceError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"{path}: not a readable JSON file ({exc})") from exc


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_record(payload, source: Path) -> dict:
    """A reference record dict from a parsed JSON: the record itself, or a bare list of
    patch-stats records (our torch_patch_stats.json), wrapped with no producer."""
    if isinstance(payload, list):
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "producer": None,
                   "params": None, "scan": None, "records": payload, "reconstruction": None}
    if not isinstance(payload, dict):
        raise ReferenceError(f"{source}: a reference record (JSON object) or a JSON list of "
                             "patch-stats records expected")
    if payload.get("format") != FORMAT:
        raise ReferenceError(f"{source}: format {payload.get('format')!r}, expected {FORMAT!r}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ReferenceError(f"{source}: format_version {payload.get('format_version')!r}, "
                             f"this reader knows {FORMAT_VERSION}")
    records = payload.get("records")
    if not isinstance(records, list) or not records:
        raise ReferenceError(f"{source}: 'records' must be a non-empty list of patch-stats "
                             "records")
    for key in ("producer", "params", "scan", "reconstruction"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise ReferenceError(f"{source}: '{key}' must be an object or null")
    return payload


def check_records(records: list, source: Path, strict: bool) -> None:
    """Each record has what compare reads (stage_name, numbers); ``strict`` (to register)
    also every stage's batch statistics, running min/max, per-patch var_zero_mean and an
    integer step, as our recorder writes them (docs/patch_stats.md)."""
    for i, record in enumerate(records):
        where = f"{source}: records[{i}]"
        if not isinstance(record, dict) or not isinstance(record.get("stage_name"), str):
            raise ReferenceError(f"{where}: an object with a string 'stage_name' expected")
        stages = record.get("stages", {})
        if not isinstance(stages, dict) or not all(isinstance(v, dict)
                                                   for v in stages.values()):
            raise ReferenceError(f"{where}: 'stages' must be an object of objects")
        for key in RECORD_NUMBERS:
            if key in record and not _is_number(record[key]):
                raise ReferenceError(f"{where}: '{key}' is not a number")
        if not strict:
            continue
        if not stages:
            raise ReferenceError(f"{where}: no stages")
        if not isinstance(record.get("step"), int) or isinstance(record.get("step"), bool):
            raise ReferenceError(f"{where}: 'step' must be an integer")
        for stage, stats in stages.items():
            needed = (*BATCH_KEYS, "running_min", "running_max")
            missing = [k for k in needed if not _is_number(stats.get(k))]
            per_patch = stats.get("per_patch")
            if not isinstance(per_patch, dict) or not isinstance(
                    per_patch.get("var_zero_mean"), list):
                missing.append("per_patch.var_zero_mean")
            if missing:
                raise ReferenceError(f"{where}: stage '{stage}' lacks {', '.join(missing)}")


def load_record(path: str | Path, strict: bool = False) -> dict:
    """Read and check a reference record (or a bare records list) from a JSON file."""
    path = Path(path)
    record = as_record(_read_json(path), path)
    check_records(record["records"], path, strict)
    return record


def reference_column(path: str | Path) -> tuple[str, dict[str, float]]:
    """What ``tracking.compare --reference PATH`` reads -> (column label, statistics).

    PATH is a JSON file (a reference record, or a bare list of patch-stats records), or a
    folder holding ``reference_record.json`` or ``torch_patch_stats.json`` and/or a debug
    dump (``stats.json``, ``offsets.json``, ``canvas.json``: ours or the TensorFlow
    reference's, mapped by :mod:`tracking.tf_dump`)."""
    path = Path(path)
    if path.is_file():
        return f"reference ({path.name})", summarize_records(load_record(path)["records"])
    if not path.is_dir():
        raise ReferenceError(f"{path}: no such file or folder")
    stats: dict[str, float] = {}
    for name in (RECORD_FILE, STATS_FILE):
        if (path / name).is_file():
            try:
                inside = confined_path(path, name, "record file")
            except UntrustedFileError as exc:
                raise ReferenceError(str(exc)) from exc
            stats.update(summarize_records(load_record(inside)["records"]))
            break
    label = f"reference ({path.name})"
    if is_dump_folder(path):
        try:
            kind, dump = read_dump_folder(path)
        except DumpError as exc:
            raise ReferenceError(f"{path}: {exc}") from exc
        stats.update(dump)
        label = f"{kind} dump ({path.name})"
    if not stats:
        raise ReferenceError(f"{path}: holds none of {RECORD_FILE}, {STATS_FILE}, stats.json "
                             "(a debug dump)")
    return label, stats


def load_reconstruction(folder: Path, record: dict) -> dict[str, np.ndarray] | None:
    """The record's reconstruction.npz ({object, weight, origin_xy}), None when it names none."""
    info = record.get("reconstruction")
    if not info:
        return None
    name = info.get("file") or RECONSTRUCTION_FILE
    try:
        path = confined_path(folder, str(name), "reconstruction file")
        if path.is_file():
            check_npz_members(path)
    except UntrustedFileError as exc:
        raise ReferenceError(f"{folder / RECORD_FILE}: {exc}") from exc
    if not path.is_file():
        raise ReferenceError(f"{folder / RECORD_FILE}: reconstruction file {name!r} is not in "
                             f"{folder}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("object", "weight", "origin_xy")
                      if key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ReferenceError(f"{path}: not a readable NPZ ({exc})") from exc
    obj, weight = arrays.get("object"), arrays.get("weight")
    if obj is None or obj.ndim != 2 or not np.iscomplexobj(obj):
        raise ReferenceError(f"{path}: key 'object' must be a 2-D complex array")
    if weight is None or weight.shape != obj.shape:
        raise ReferenceError(f"{path}: key 'weight' must have the object's shape {obj.shape}")
    if not (np.isfinite(obj).all() and np.isfinite(weight).all()):
        raise ReferenceError(f"{path}: non-finite values in 'object' or 'weight'")
    origin = arrays.get("origin_xy", np.zeros(2))
    return {"object": obj.astype(np.complex64), "weight": weight.astype(np.float32),
            "origin_xy": np.asarray(origin, np.float64).reshape(2)}


# ----------------------------------------------------------------------------- registering

def reference_params(record: dict) -> dict[str, object]:
    """The record's params under the names our train runs use (unknown ones left out)."""
    params = {}
    for key, value in (record.get("params") or {}).items():
        if value is None:
            continue
        for name in PARAM_NAMES.get(key, (f"reference.{key}",)):
            params[name] = value
    return params


def reference_tags(record: dict, directory: Path) -> dict[str, str]:
    """Tags naming who made the record; they replace the environment tags that would
    describe this machine as if it had run the model (device, torch, source commit)."""
    producer = record.get("producer") or {}
    implementation = str(producer.get("implementation") or "unknown")
    commit = str(producer.get("commit") or "unknown")
    version = producer.get("version")
    settings = producer.get("settings")
    seed = settings.get("seed") if isinstance(settings, dict) else None
    tags = {"implementation": implementation, "producer.commit": commit,
            "producer.script": str(producer.get("script") or "unknown"),
            "reference.dir": str(directory.resolve()),
            "mlflow.source.git.commit": commit,
            "device": "unknown", "device_name": "unknown",
            "torch_version": "n/a", "cuda_version": "n/a",
            "seed": "unknown" if seed is None else str(seed)}
    if isinstance(version, dict):
        tags["producer.version"] = json.dumps(version, sort_keys=True)
        tags.update({f"producer.version.{k}": str(v) for k, v in version.items()})
        if "torch" in version:
            tags["torch_version"] = str(version["torch"])
    elif version is not None:
        tags["producer.version"] = str(version)
    scan = record.get("scan") or {}
    for key in ("file", "sha256"):
        if scan.get(key):
            tags[f"reference.scan.{key}"] = str(scan[key])
    return tags


def _scan_for_scoring(library: Library, scan_path: str, record: dict,
                      reconstruction: dict | None):
    from tracking.provenance import sha256_file

    path = Path(scan_path)
    if not path.is_file():
        raise ReferenceError(f"--scan {scan_path}: no such file")
    expected = (record.get("scan") or {}).get("sha256")
    if expected and sha256_file(path) != expected:
        raise ReferenceError(f"--scan {scan_path}: not the scan the record was made from "
                             f"(its sha256 differs from the record's scan.sha256 "
                             f"{expected[:12]}...)")
    try:
        scan = library.load_scan(path)
    except ValueError as exc:
        raise ReferenceError(f"--scan {exc}") from exc
    truth = scan.object_guess
    if reconstruction is not None and truth is not None \
            and truth.shape != reconstruction["object"].shape:
        raise ReferenceError(f"--scan {scan_path}: objectGuess {truth.shape} is not the "
                             f"reconstruction's frame {reconstruction['object'].shape}")
    return scan


def register(directory: str | Path, *, library: Library | None = None,
             scan_path: str | None = None, run_name: str | None = None,
             experiment_name: str = "ptycho_torch", tracking_uri: str | None = None,
             command: list[str] | None = None) -> tuple[str, dict]:
    """Create the run for the record in ``directory``; returns (run id, summary).

    Everything is read and checked before the run is created, so bad input raises
    :class:`ReferenceError` and leaves the store untouched. ``library`` is needed for a
    reconstruction (picture; metrics too with a ``scan_path`` whose scan has objectGuess)."""
    from tracking.files import atomic_write_json
    from tracking.run import TrackedRun

    directory = Path(directory)
    if not directory.is_dir():
        raise ReferenceError(f"{directory}: not a folder")
    if not (directory / RECORD_FILE).is_file():
        raise ReferenceError(f"{directory}: no {RECORD_FILE}")
    record = load_record(directory / RECORD_FILE, strict=True)
    reconstruction = load_reconstruction(directory, record)
    if reconstruction is not None and library is None:
        raise ReferenceError("a reconstruction needs ptycho_torch's scoring (use cli_main)")
    scan = None
    if scan_path is not None:
        if library is None:
            raise ReferenceError("--scan needs ptycho_torch's scan loader (use cli_main)")
        scan = _scan_for_scoring(library, scan_path, record, reconstruction)
        if reconstruction is None:
            logger.warning("%s names no reconstruction: --scan is logged as the run's "
                           "dataset, nothing is scored", RECORD_FILE)
    implementation = str((record.get("producer") or {}).get("implementation") or "unknown")
    summary = {"implementation": implementation, "records": len(record["records"]),
               "metrics": None}
    with TrackedRun(kind="reference", output_dir=directory, command=command or [PROG],
                    loggers=("mlflow", "tensorboard"), tracking_uri=tracking_uri,
                    experiment_name=experiment_name, run_name=run_name,
                    tags=reference_tags(record, directory),
                    system_metrics_interval=None) as run, \
            tempfile.TemporaryDirectory() as tmp:
        run.log_params(reference_params(record))
        if scan is not None:
            run.log_dataset(scan.path, "inference")
        for rec in record["records"]:
            run.log_patch_record(rec)
        run.log_artifact(directory / RECORD_FILE)
        analysis = Path(tmp) / "analysis"
        atomic_write_json(analysis / STATS_FILE, record["records"])
        run.log_artifact(analysis / STATS_FILE, "analysis")
        if (directory / PRODUCER_PNG).is_file():
            run.log_artifact(directory / PRODUCER_PNG, "reference")
        if reconstruction is not None:
            summary["metrics"] = _log_reconstruction(run, library, reconstruction, scan,
                                                     record, Path(tmp) / "reconstruction")
        return run.run_id, summary


def _log_reconstruction(run, library: Library, rec: dict, scan, record: dict,
                        folder: Path) -> dict | None:
    """Score (scan with objectGuess), draw and log the reconstruction as our inference does."""
    obj, weight = rec["object"], rec["weight"]
    truth = None if scan is None else scan.object_guess
    n = scan.patch_size if scan is not None else int((record.get("params") or {}).get("N")
                                                        or 64)
    crop = library.default_crop(n)
    metrics = None if truth is None else library.evaluate(obj, weight, truth, crop)
    producer = record.get("producer") or {}
    scan_name = (scan.path.name if scan is not None
                 else (record.get("scan") or {}).get("file", "scan"))
    title = f"{producer.get('implementation') or 'reference'} reference: {scan_name}"
    if metrics:
        title += (f" | amp SSIM {metrics['amp_ssim']:.3f}, "
                  f"phase SSIM {metrics['phase_ssim']:.3f}")
    groups = int((record.get("reconstruction") or {}).get("groups_stitched") or 0)
    shown = library.reconstruction(
        object=obj, weight=weight, origin_xy=rec["origin_xy"], crop_px=crop, n_groups=groups,
        n_patterns=0, seconds=math.nan, device="unknown", title=title, metrics=metrics,
        ground_truth=None if truth is None else np.where(weight > 0, truth, 0))
    for path in shown.save(folder):
        run.log_artifact(path)
    run.log_images([folder / "reconstruction.png"])
    if metrics:
        run.log_final_metrics(metrics)
    return metrics


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Register a reference record (docs/reference_record.md) as an MLflow run "
                    "with TensorBoard event files, beside our runs; prints the run id.")
    parser.add_argument("directory", metavar="DIR",
                        help=f"folder holding {RECORD_FILE} (and the {RECONSTRUCTION_FILE} "
                             "it names, if any)")
    parser.add_argument("--scan", default=None,
                        help="the scan the reconstruction was made from (NPZ): its objectGuess "
                             "scores it with our metrics; its sha256 must match the record's")
    parser.add_argument("--run-name", default=None,
                        help="run name shown in the UIs (default: MLflow generates one)")
    parser.add_argument("--experiment-name", default="ptycho_torch",
                        help="MLflow experiment / TensorBoard folder (default: %(default)s)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI if set, else "
                             "the embedded sqlite:///mlruns/mlflow.db)")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    """Register DIR; the run id is stdout's last line. Exit 0, or 2 on bad input."""
    from tracking.provenance import command_line
    from tracking.store import TrackingUnavailable

    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # the one place tracking uses ptycho_torch: imported here, lazily (docs/library.md)
    from ptycho_torch.data import load_scan
    from ptycho_torch.reassembly import default_crop
    from ptycho_torch.workflows import Reconstruction, evaluate

    library = Library(load_scan=load_scan, evaluate=evaluate, default_crop=default_crop,
                      reconstruction=Reconstruction)
    try:
        run_id, summary = register(args.directory, library=library, scan_path=args.scan,
                                   run_name=args.run_name,
                                   experiment_name=args.experiment_name,
                                   tracking_uri=args.tracking_uri,
                                   command=command_line(PROG, argv))
    except (ReferenceError, TrackingUnavailable) as exc:
        print(redact(f"{PROG}: error: {exc}"), file=sys.stderr)
        return 2
    scores = summary["metrics"]
    scored = (f", amp_ssim {scores['amp_ssim']:.4f}, phase_ssim {scores['phase_ssim']:.4f}"
              if scores else "")
    print(f"registered {summary['implementation']} reference: {summary['records']} "
          f"records{scored}")
    print(run_id)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
