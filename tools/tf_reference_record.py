#!/usr/bin/env python
"""Write a reference record (docs/reference_record.md) from the TensorFlow reference.

Standalone: imports numpy, the reference's ``ptycho`` package and TensorFlow/Keras only
(never ptycho_torch or tracking), so it runs in the reference's own environment.

Loads the reference's trained bundle (``wts.h5.zip`` in a training output folder), groups
a scan as the reference does (``RawData.generate_grouped_data``, whose normalization
``sqrt((N/2)^2 / mean sum X^2)`` runs over the grouped patterns), runs the first K record
batches through the reference model in predict calls of at most 15 groups, records the
stages of its forward path in the patch-stats record shape of ptycho_torch, stitches every
group's object into the scan's object frame, and writes ``reference_record.json``,
``reconstruction.npz``, ``reconstruction.png`` and ``inference_groups.npy`` (the inference
groups' pattern indices, for ``ptycho_torch.inference --group-indices``) into the output
folder.

Example (in the reference's environment)::

    python tools/tf_reference_record.py --model-dir tf_train_out \\
        --scan datasets/test.npz --train-scan datasets/train.npz \\
        --patch-stats-limit 2 --output-dir tf_record
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "ptycho-reference-record"
FORMAT_VERSION = 1
RECORD_FILE = "reference_record.json"
RECONSTRUCTION_FILE = "reconstruction.npz"
GROUPS_FILE = "inference_groups.npy"  # (G, C) pattern indices of the inference groups
PNG_FILE = "reconstruction.png"
SCRIPT = "tools/tf_reference_record.py"
# The reference's ReassemblePatchesLayer (gridsize > 1) takes another code path once one
# call holds >= 64 patches and then sums all groups of the call into one object.
MERGE_FAULT_PATCHES = 64
STAGES = ("input_raw", "input_normalized", "object_amplitude", "object_phase",
          "predicted_amplitude")
PER_PATCH_KEYS = ("mean", "var", "var_zero_mean", "min", "max")
BATCH_KEYS = ("global_mean", "global_std", "var_zero_mean", "min", "max")
MAX_PER_PATCH = 256  # as ptycho_torch: per-patch lists keep the first 256 patches
STITCH_CROP = 20  # central crop of each group's object, as the reference's inference (M=20)
SCAN_KEYS = ("diffraction", "probeGuess", "xcoords", "ycoords", "xcoords_start",
             "ycoords_start")
# sub-model outputs: reference layer name -> what we take from it
LAYERS = {"input_normalized": "intensity_scaler",  # what the network sees
          "object": "padded_objs_with_offsets",  # patches the physics illuminates
          "predicted_amplitude": "intensity_scaler_inv",  # exp(log_scale) * |F(O P)|
          "group_object": "trimmed_obj"}  # the inference output (diffraction_to_obj)


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit status 2, nothing written."""


# ----------------------------------------------------------------------------- arguments

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _groups(text: str) -> int | None:
    return None if text == "all" else _positive_int(text)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's usage block is many)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tf_reference_record.py",
        description="Write reference_record.json (+ reconstruction.npz, reconstruction.png) "
                    "from a trained TensorFlow PtychoPINN reference model; format in "
                    "docs/reference_record.md. Run it with the Python of the reference's "
                    "environment (TensorFlow and the reference's 'ptycho' package).")
    parser.add_argument("--model-dir", required=True,
                        help="the reference's training output folder, holding wts.h5.zip")
    parser.add_argument("--scan", required=True,
                        help="NPZ scan to reconstruct (keys diffraction, probeGuess, xcoords, "
                             "ycoords, xcoords_start, ycoords_start; objectGuess optional): "
                             "its records get stage_name 'inference'")
    parser.add_argument("--output-dir", required=True,
                        help="folder for reference_record.json, reconstruction.npz and "
                             "reconstruction.png (created; existing files of these names "
                             "are replaced)")
    parser.add_argument("--train-scan", default=None,
                        help="the scan the model was trained on: adds 'train' records, grouped "
                             "and normalized as the reference's training does (the bundle's "
                             "n_groups, n_subsample, neighbor_count; group seed --seed)")
    parser.add_argument("--patch-stats-limit", type=_positive_int, default=2, metavar="K",
                        help="record batches per stage name (default: %(default)s)")
    parser.add_argument("--batch-groups", type=_positive_int, default=4, metavar="B",
                        help="groups per model call (Keras predict batch), 1-15: at >= 16 "
                             "groups (64 patches at gridsize 2) the reference's merge layer "
                             "sums all groups of a call into one object, so larger values "
                             "are refused (default: %(default)s)")
    parser.add_argument("--record-groups", type=_positive_int, default=32, metavar="R",
                        help="groups per 'inference' record, as ptycho_torch's inference batch "
                             "(computed over ceil(R/B) model calls; default: %(default)s). "
                             "'train' records use the bundle's training batch_size")
    parser.add_argument("--groups", type=_groups, default=None, metavar="G|all",
                        help="groups formed from --scan and stitched: a number, or 'all' = one "
                             "group seeded at every scan position, so the whole scan is "
                             "reconstructed (default: all)")
    parser.add_argument("--train-weights", choices=("initial", "trained"), default="initial",
                        help="weights for the 'train' records: 'initial' = a freshly built "
                             "reference model (seed --seed), as ptycho_torch records its first "
                             "training batches before any update; 'trained' = the bundle's "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=45,
                        help="numpy/TensorFlow seed for grouping and initial weights "
                             "(default: %(default)s, the seed of the reference's inference)")
    parser.add_argument("--reference-commit", default=None,
                        help="git commit of the reference, recorded as producer.commit "
                             "(default: detected from the package's git checkout or its "
                             "installed version '+<hex>' suffix, else 'unknown')")
    parser.add_argument("--no-png", action="store_true", help="skip reconstruction.png")
    return parser


def _check_npz(path: str, flag: str) -> dict:
    """Cheap checks before TensorFlow is imported; returns {key: shape}."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    if not zipfile.is_zipfile(p):
        raise UsageError(f"{flag} {path}: not an NPZ file")
    try:
        with np.load(p, allow_pickle=False) as data:
            shapes = {key: data[key].shape for key in data.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a usage error
        raise UsageError(f"{flag} {path}: not a readable NPZ ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [key for key in SCAN_KEYS if key not in shapes]
    if missing:
        raise UsageError(f"{flag} {path}: missing key(s) {', '.join(missing)}")
    diff = shapes["diffraction"]
    if len(diff) != 3 or diff[1] != diff[2]:
        raise UsageError(f"{flag} {path}: diffraction must be (n, N, N), got {diff}")
    for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        if shapes[key] != (diff[0],):
            raise UsageError(f"{flag} {path}: {key} shape {shapes[key]} != ({diff[0]},)")
    if shapes["probeGuess"] != diff[1:]:
        raise UsageError(f"{flag} {path}: probeGuess {shapes['probeGuess']} != {diff[1:]}")
    if "objectGuess" in shapes and len(shapes["objectGuess"]) != 2:
        raise UsageError(f"{flag} {path}: objectGuess must be 2-D, got {shapes['objectGuess']}")
    return shapes


def validate(args) -> None:
    if args.batch_groups >= 16:
        raise UsageError(f"--batch-groups {args.batch_groups}: >= 16 groups per call (>= 64 "
                         "patches at gridsize 2) trigger the reference's merge fault that "
                         "sums all groups of a call; use 1-15")
    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        raise UsageError(f"--model-dir {args.model_dir}: not a folder")
    bundle = model_dir / "wts.h5.zip"
    if not bundle.is_file():
        raise UsageError(f"--model-dir {args.model_dir}: no wts.h5.zip (the reference's "
                         "trained bundle)")
    if not zipfile.is_zipfile(bundle):
        raise UsageError(f"--model-dir {args.model_dir}: wts.h5.zip is not a zip archive")
    args.scan_shapes = _check_npz(args.scan, "--scan")
    if args.train_scan is not None:
        args.train_shapes = _check_npz(args.train_scan, "--train-scan")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir {args.output_dir}: exists and is not a folder")


# ----------------------------------------------------------------------------- statistics

def patch_stats(x: np.ndarray) -> dict:
    """ptycho_torch's compute_patch_stats in numpy: x (..., H, W), each (H, W) one patch."""
    patches = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-2] * x.shape[-1])
    mean = patches.mean(axis=1)
    var_zero_mean = ((patches - mean[:, None]) ** 2).mean(axis=1)
    n = patches.shape[1]
    var = var_zero_mean * (n / max(n - 1, 1))
    per_patch = np.stack([mean, var, var_zero_mean, patches.min(axis=1),
                          patches.max(axis=1)])[:, :MAX_PER_PATCH]
    summary = [patches.mean(), patches.std(), var_zero_mean.mean(), patches.min(),
               patches.max()]
    stats = {"n_patches": int(patches.shape[0])}
    stats.update({key: float(value) for key, value in zip(BATCH_KEYS, summary, strict=True)})
    stats["per_patch"] = {key: [float(v) for v in row]
                          for key, row in zip(PER_PATCH_KEYS, per_patch, strict=True)}
    return stats


class Records:
    """Builds records as ptycho_torch's PatchStatsRecorder.end() does (same keys, order,
    running min/max per (stage name, stage))."""

    def __init__(self):
        self.records: list[dict] = []
        self._running: dict[tuple[str, str], tuple[float, float]] = {}
        self._counts: dict[str, int] = {}

    def add(self, stage_name: str, step: int, stages: dict[str, np.ndarray],
            scales: dict[str, float]) -> dict:
        observed = {}
        for stage, tensor in stages.items():
            stats = patch_stats(tensor)
            lo, hi = self._running.get((stage_name, stage), (math.inf, -math.inf))
            lo, hi = min(lo, stats["min"]), max(hi, stats["max"])
            self._running[(stage_name, stage)] = (lo, hi)
            stats["running_min"], stats["running_max"] = lo, hi
            observed[stage] = stats
        collapse = observed["object_amplitude"]
        batch_idx = self._counts.get(stage_name, 0)
        record = {"stage_name": stage_name, "batch_idx": batch_idx, "step": int(step),
                  "global_mean": collapse["global_mean"],
                  "global_std": collapse["global_std"],
                  "var_zero_mean": collapse["var_zero_mean"]}
        record.update({key: float(value) for key, value in scales.items()})
        record["stages"] = observed
        self._counts[stage_name] = batch_idx + 1
        self.records.append(record)
        return record


# ----------------------------------------------------------------------------- reference

def _quiet_environment() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # the reference's disk memoizer would create ./memoized_data at import
    os.environ.setdefault("PTYCHO_DISABLE_MEMOIZE", "1")


def _reference_commit(explicit: str | None) -> str:
    if explicit:
        return explicit
    import ptycho

    root = Path(ptycho.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib import metadata

        version = metadata.version("ptychopinn")
        local = version.partition("+")[2]
        for part in local.replace("-", ".").split("."):
            hexpart = part[1:] if part.startswith("g") else part
            if len(hexpart) >= 7 and all(c in "0123456789abcdef" for c in hexpart):
                return hexpart
    except Exception:  # noqa: BLE001
        pass
    return "unknown"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _group(raw, n: int, gridsize: int, k: int, nsamples: int, seed: int,
           sequential: bool = False) -> dict:
    """The reference's grouping and normalization; ground-truth patches skipped (unused)."""
    object_guess, raw.objectGuess = raw.objectGuess, None
    try:
        np.random.seed(seed)
        return raw.generate_grouped_data(n, K=k, nsamples=nsamples, seed=seed,
                                         sequential_sampling=sequential, gridsize=gridsize)
    finally:
        raw.objectGuess = object_guess


def _mean_input_scale(dset: dict) -> float:
    """The reference's normalization factor, recomputed as X_full / diffraction."""
    diff = np.asarray(dset["diffraction"], dtype=np.float64)
    x_full = np.asarray(dset["X_full"], dtype=np.float64)
    lit = diff > 0
    return float(np.mean(x_full[lit] / diff[lit]))


def _to_bcnn(x: np.ndarray, c: int) -> np.ndarray:
    """(B, N, N, C) or flat (B*C, N, N, 1) -> (B, C, N, N), ptycho_torch's layout."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1 and c > 1:  # flat: _channel_to_flat is b-major
        return x[..., 0].reshape(-1, c, *x.shape[1:3])
    return np.transpose(x, (0, 3, 1, 2))


class Probe:
    """Runs a reference autoencoder in small predict calls, returning the stage tensors."""

    def __init__(self, autoencoder, intensity_scale: float, gridsize: int, batch_groups: int):
        import keras

        self.gridsize = gridsize
        self.c = gridsize * gridsize
        self.batch_groups = batch_groups
        self.intensity_scale = intensity_scale
        self.model = keras.Model(autoencoder.inputs,
                                 [autoencoder.get_layer(name).output
                                  for name in LAYERS.values()])
        self.log_scale = autoencoder.get_layer("intensity_scaler").w
        if self.batch_groups * self.c >= MERGE_FAULT_PATCHES:
            raise UsageError(f"--batch-groups {batch_groups}: {batch_groups * self.c} patches "
                             f"per call >= {MERGE_FAULT_PATCHES} (the reference's merge fault "
                             "path); use fewer")

    @property
    def physics_scale(self) -> float:
        return float(np.exp(np.asarray(self.log_scale)))

    def run(self, x: np.ndarray, local_offsets: np.ndarray) -> dict[str, np.ndarray]:
        """x (G, N, N, C) normalized (the reference's X); returns stage arrays over G."""
        parts: dict[str, list[np.ndarray]] = {key: [] for key in LAYERS}
        for start in range(0, x.shape[0], self.batch_groups):
            sl = slice(start, start + self.batch_groups)
            # the reference's inference feeds X * intensity_scale (nbutils.reconstruct_image)
            outs = self.model([x[sl] * self.intensity_scale, local_offsets[sl]],
                              training=False)
            for key, out in zip(LAYERS, outs, strict=True):
                out = np.asarray(out)
                # per group: (g, C, N, N), or (g, N, N) for the group's object
                parts[key].append(out[..., 0] if key == "group_object"
                                  else _to_bcnn(out, self.c))
        return {key: np.concatenate(val) for key, val in parts.items()}


def _stage_arrays(raw_diff: np.ndarray, out: dict, c: int) -> dict[str, np.ndarray]:
    """Stage tensors of a slice of groups, each (g, C, N, N) as ptycho_torch's."""
    obj = out["object"]
    return {"input_raw": _to_bcnn(raw_diff, c),
            "input_normalized": out["input_normalized"],
            "object_amplitude": np.abs(obj),
            "object_phase": np.angle(obj),
            "predicted_amplitude": out["predicted_amplitude"]}


def stitch(patches: np.ndarray, centres_xy: np.ndarray, shape: tuple[int, int],
           origin_xy: np.ndarray, crop: int = STITCH_CROP, chunk: int = 16):
    """The reference's shift-and-sum (tf_helper.shift_and_sum / reassemble_position): the
    central ``crop`` px of each (N, N) patch, bilinearly translated with the reference's
    ``tf_helper.translate``, summed, divided by the summed ones + 1e-9; but on a canvas of
    ``shape`` whose pixel (0, 0) is scan coordinate ``origin_xy`` (the object frame) instead
    of the reference's canvas centred on the mean position. Patch index N/2 sits at its
    centre, as in the reference's get_image_patches. Returns (object complex64, weight
    float32) of ``shape``."""
    import tensorflow as tf
    from ptycho import tf_helper as hh

    n = patches.shape[-1]
    lo = n // 2 - crop // 2
    crops = patches[:, lo:lo + crop, lo:lo + crop]
    h, w = shape
    # crop index crop/2 (= patch index N/2) lands on the centre
    shifts = (centres_xy - origin_xy[None, :] - crop / 2).astype(np.float32)
    numerator = np.zeros((h, w), np.complex64)
    weight = np.zeros((h, w), np.float32)
    for start in range(0, crops.shape[0], chunk):
        sl = slice(start, start + chunk)
        b = crops[sl].shape[0]
        canvas = np.zeros((b, h, w, 1), np.complex64)
        canvas[:, :crop, :crop, 0] = crops[sl]
        ones = np.zeros((b, h, w, 1), np.float32)
        ones[:, :crop, :crop, 0] = 1.0
        offsets = tf.constant(shifts[sl])
        moved = np.asarray(hh.translate(tf.constant(canvas), offsets, interpolation="bilinear"))
        moved_ones = np.asarray(hh.translate(tf.constant(ones), offsets,
                                             interpolation="bilinear"))
        numerator += moved[..., 0].sum(axis=0)
        weight += moved_ones[..., 0].sum(axis=0)
    obj = (numerator / (weight + 1e-9)).astype(np.complex64)
    weight = np.where(weight > 1e-6, weight, 0).astype(np.float32)
    obj[weight == 0] = 0
    return obj, weight


# ----------------------------------------------------------------------------- writing

def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _png_bytes(obj: np.ndarray, weight: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    covered = weight > 0
    amp = np.where(covered, np.abs(obj), np.nan)
    phase = np.where(covered, np.angle(obj), np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, img, label, cmap in ((axes[0], amp, "amplitude", "gray"),
                                 (axes[1], phase, "phase (rad)", "viridis")):
        im = ax.imshow(img, cmap=cmap)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- main

def produce(args) -> dict:
    _quiet_environment()
    chatter = io.StringIO()  # the reference prints a lot; keep stdout for our summary
    started = time.perf_counter()
    with contextlib.redirect_stdout(chatter):
        try:
            import keras
            import tensorflow as tf
        except ImportError as exc:
            raise UsageError(f"TensorFlow is not importable ({exc}); run with the reference's "
                             "environment") from None
        try:
            import ptycho.model  # noqa: F401
            from ptycho import params
            from ptycho.model_manager import ModelManager
            from ptycho.workflows.components import load_data
        except ImportError as exc:
            raise UsageError(f"the TensorFlow reference package 'ptycho' is not importable "
                             f"({exc}); see docs/reference_record.md") from None
        import logging
        import warnings

        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)

        try:
            models = ModelManager.load_multiple_models(str(Path(args.model_dir) / "wts.h5"))
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"--model-dir {args.model_dir}: cannot load the reference bundle "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                             ) from None
        cfg = dict(params.cfg)
        n, gridsize = int(cfg["N"]), int(cfg["gridsize"])
        c = gridsize * gridsize
        for flag, shapes in (("--scan", args.scan_shapes),
                             ("--train-scan", getattr(args, "train_shapes", None))):
            if shapes is not None and shapes["diffraction"][1] != n:
                raise UsageError(f"{flag}: patterns are {shapes['diffraction'][1]} px, the "
                                 f"model's N is {n}")
        if args.batch_groups * c >= MERGE_FAULT_PATCHES:
            raise UsageError(f"--batch-groups {args.batch_groups}: {args.batch_groups * c} "
                             f"patches per call >= {MERGE_FAULT_PATCHES} at gridsize "
                             f"{gridsize} (the reference's merge fault); use fewer")
        intensity_scale = float(cfg["intensity_scale"])
        trained = Probe(models["autoencoder"], intensity_scale, gridsize, args.batch_groups)
        recs = Records()
        settings = {"batch_groups": args.batch_groups, "record_groups": args.record_groups,
                    "patch_stats_limit": args.patch_stats_limit, "seed": args.seed,
                    "train_weights": args.train_weights if args.train_scan else None,
                    "stitch": f"reference shift-and-sum (central {STITCH_CROP} px, bilinear "
                              "tf_helper.translate) on the object frame",
                    "intensity_scale_trainable": bool(cfg.get("intensity_scale.trainable")),
                    "probe_big": cfg.get("probe.big"), "object_big": cfg.get("object.big"),
                    "probe_scale": cfg.get("probe_scale"), "nll_weight": cfg.get("nll_weight"),
                    "mae_weight": cfg.get("mae_weight"), "model_dir": str(args.model_dir)}

        # ---- inference scan: group, run, record the first K batches, stitch all groups
        raw = load_data(args.scan)
        n_points = len(raw.xcoords)
        n_groups = n_points if args.groups is None else min(args.groups, n_points)
        tf.random.set_seed(args.seed)
        dset = _group(raw, n, gridsize, 4, n_groups, args.seed)
        x = np.asarray(dset["X_full"], np.float32)
        local = np.asarray(dset["coords_relative"], np.float32)
        centres = np.asarray(dset["coords_offsets"], np.float64)[:, 0, :, 0]  # (G, 2) x, y
        inference_scale = _mean_input_scale(dset)
        out = trained.run(x, local)
        physics_scale = trained.physics_scale
        for b in range(args.patch_stats_limit):
            sl = slice(b * args.record_groups, (b + 1) * args.record_groups)
            if sl.start >= x.shape[0]:
                break
            part = {key: val[sl] for key, val in out.items()}
            recs.add("inference", b, _stage_arrays(dset["diffraction"][sl], part, c),
                     {"mean_input_scale": inference_scale, "physics_scale": physics_scale})
        group_obj = out["group_object"]  # (G, N, N)
        object_guess = getattr(raw, "objectGuess", None)
        if object_guess is not None:
            shape, origin = tuple(int(s) for s in np.shape(object_guess)), np.zeros(2)
        else:  # no object frame: the box that bounds the patches (ptycho_torch's rule)
            pos = np.stack([raw.xcoords, raw.ycoords], axis=1)
            lo_xy = np.floor(pos.min(axis=0) - n / 2)
            hi_xy = np.ceil(pos.max(axis=0) + n / 2)
            width, height = (hi_xy - lo_xy + 1).astype(int)
            shape, origin = (int(height), int(width)), lo_xy
        obj, weight = stitch(group_obj, centres, shape, origin)

        # ---- training scan: the reference's training grouping and normalization
        train_info = None
        if args.train_scan is not None:
            n_train_groups = int(cfg.get("n_groups") or 0) or None
            n_sub = cfg.get("n_subsample")
            np.random.seed(args.seed)
            train_raw = load_data(args.train_scan, n_images=n_train_groups,
                                  n_subsample=int(n_sub) if n_sub else None,
                                  subsample_seed=cfg.get("subsample_seed"))
            n_train_groups = n_train_groups or len(train_raw.xcoords)
            tdset = _group(train_raw, n, gridsize, int(cfg.get("neighbor_count") or 4),
                           n_train_groups, args.seed, bool(cfg.get("sequential_sampling")))
            tx = np.asarray(tdset["X_full"], np.float32)
            tlocal = np.asarray(tdset["coords_relative"], np.float32)
            train_scale = _mean_input_scale(tdset)
            train_batch = int(cfg.get("batch_size") or 4)
            if args.train_weights == "initial":
                from ptycho.model import create_model_with_gridsize

                keras.utils.set_random_seed(args.seed)
                fresh, _ = create_model_with_gridsize(gridsize, n)
                probe = Probe(fresh, intensity_scale, gridsize, args.batch_groups)
            else:
                probe = trained
            needed = min(tx.shape[0], args.patch_stats_limit * train_batch)
            tout = probe.run(tx[:needed], tlocal[:needed])
            for b in range(args.patch_stats_limit):
                sl = slice(b * train_batch, (b + 1) * train_batch)
                if sl.start >= needed:
                    break
                part = {key: val[sl] for key, val in tout.items()}
                recs.add("train", b, _stage_arrays(tdset["diffraction"][sl], part, c),
                         {"mean_input_scale": train_scale,
                          "physics_scale": probe.physics_scale})
            train_info = {"file": Path(args.train_scan).name,
                          "sha256": _sha256(args.train_scan),
                          "groups": int(tx.shape[0]), "batch": train_batch}
            # train records first, as in ptycho_torch's runs
            recs.records.sort(key=lambda r: (r["stage_name"] != "train", r["batch_idx"]))

    n_epochs = cfg.get("nepochs")
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "producer": {"implementation": "tensorflow",
                     "version": {"tensorflow": tf.__version__, "keras": keras.__version__,
                                 "numpy": np.__version__},
                     "commit": _reference_commit(args.reference_commit),
                     "script": SCRIPT, "settings": settings},
        "params": {"N": n, "gridsize": gridsize,
                   "groups": int(cfg["n_groups"]) if cfg.get("n_groups") else None,
                   "batch": int(cfg["batch_size"]) if cfg.get("batch_size") else None,
                   "epochs": int(n_epochs) if n_epochs is not None else None,
                   "nphotons": float(cfg["nphotons"])},
        "scan": {"file": Path(args.scan).name, "sha256": _sha256(args.scan),
                 "groups": int(n_groups)},
        "train_scan": train_info,
        "records": recs.records,
        "inference_groups": {"file": GROUPS_FILE,
                             "shape": list(np.shape(dset["nn_indices"]))},
        "reconstruction": {"file": RECONSTRUCTION_FILE, "shape": list(shape),
                           "frame": "objectGuess" if object_guess is not None else "bounding box",
                           "origin_xy": [float(v) for v in origin],
                           "covered_pixels": int((weight > 0).sum()),
                           "groups_stitched": int(group_obj.shape[0])},
    }
    for rec in record["records"]:
        for key in ("global_mean", "global_std", "var_zero_mean", "mean_input_scale",
                    "physics_scale"):
            if not math.isfinite(rec[key]):
                raise RuntimeError(f"non-finite {key} in {rec['stage_name']} record "
                                   f"{rec['batch_idx']}")

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out_dir / RECONSTRUCTION_FILE, _npz_bytes(
        object=obj, amplitude=np.abs(obj).astype(np.float32),
        phase=np.angle(obj).astype(np.float32), weight=weight,
        origin_xy=np.asarray(origin, np.float64)))
    groups = io.BytesIO()  # ptycho_torch.inference --group-indices takes these
    np.save(groups, np.asarray(dset["nn_indices"], np.int64), allow_pickle=False)
    _atomic_write_bytes(out_dir / GROUPS_FILE, groups.getvalue())
    if not args.no_png:
        _atomic_write_bytes(out_dir / PNG_FILE, _png_bytes(
            obj, weight, f"TF reference: {Path(args.scan).name}, {n_groups} groups"))
    _atomic_write_bytes(out_dir / RECORD_FILE,
                        (json.dumps(record, indent=1) + "\n").encode())
    record["_seconds"] = time.perf_counter() - started
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        validate(args)
        record = produce(args)
    except UsageError as exc:
        print(f"tf_reference_record.py: error: {exc}", file=sys.stderr)
        return 2
    firsts = {}
    for rec in record["records"]:
        firsts.setdefault(rec["stage_name"], rec)
    for name, rec in firsts.items():
        print(f"{name} batch 0: mean_input_scale {rec['mean_input_scale']:.6g}, physics_scale "
              f"{rec['physics_scale']:.6g}, var_zero_mean {rec['var_zero_mean']:.6g}")
    print(f"wrote {Path(args.output_dir) / RECORD_FILE} ({len(record['records'])} records) and "
          f"{RECONSTRUCTION_FILE} in {record['_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
