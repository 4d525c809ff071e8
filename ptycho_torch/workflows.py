"""The library beneath the CLIs: load a scan, fit a model, load it back, reconstruct.

Configs in, frozen results out. Nothing here parses flags, prints, or knows of MLflow:
trackers reach training only as the Lightning ``loggers`` and ``callbacks`` a caller hands
to :func:`fit`, and instrumentation only as a recorder handed to :func:`reconstruct`.
Errors on bad input are :mod:`ptycho_torch.errors` types, one line each.

A notebook session::

    from ptycho_torch import build_run_config, fit, load_scan, reconstruct

    scan = load_scan("datasets/train.npz")
    result = fit(build_run_config(scan, gridsize=2, n_groups=64), scan, "outputs/nb")
    rec = reconstruct(result.model, load_scan("datasets/test.npz"), result.config)
    rec.metrics["amp_ssim"]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ptycho_torch.config import InferenceConfig, RunConfig, StitchWeight
from ptycho_torch.data import (
    GroupedScan,
    PtychoDataModule,
    ScanData,
    build_grouped_scan,
    compute_norm_factor,
)
from ptycho_torch.data import load_scan as load_scan
from ptycho_torch.errors import ModelFileError, ModelFolderError, ScanModelMismatch
from ptycho_torch.metrics import compute_metrics, global_phase_aligned
from ptycho_torch.model import PtychoLightning, PtychoPINN
from ptycho_torch.reassembly import Stitcher, canvas_frame, covered_box, default_crop, probe_weight
from tracking.files import atomic_path, atomic_savez, atomic_write_json
from tracking.untrusted import (
    MAX_JSON_BYTES,
    UntrustedFileError,
    available_memory_bytes,
    check_size,
    confined_path,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


# -- training ---------------------------------------------------------------------------
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
    """The Lightning Trainer of a run: checkpoints (last and best) under
    ``output_dir/checkpoints``, written atomically."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    ex = config.execution
    checkpoint = ModelCheckpoint(dirpath=output_dir / CHECKPOINT_DIR, save_last=True)
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


@dataclass(frozen=True)
class TrainResult:
    """A finished training: the model (eval mode) and what the run did."""

    model: PtychoPINN
    config: RunConfig
    output_dir: Path
    seconds: float
    """Wall time of ``trainer.fit``."""
    epochs: int
    global_step: int
    final_metrics: dict[str, float]
    """Lightning's last logged values (train_loss_epoch, val_loss, ...)."""
    n_train_groups: int
    n_val_groups: int
    object_gain: float
    """The trained global object-amplitude gain g."""

    def summary(self) -> dict:
        """JSON-able figures of the run (train_summary.json)."""
        fields = dataclasses.asdict(self)
        return {key: fields[key] for key in ("seconds", "epochs", "global_step",
                                             "final_metrics", "n_train_groups",
                                             "n_val_groups", "object_gain")}


def build_datamodule(config: RunConfig, scan: ScanData) -> PtychoDataModule:
    """The scan's groups, split into train and validation (grouping errors raise here)."""
    return PtychoDataModule(scan, config.data, config.training.batch_size,
                            config.training.val_fraction, config.execution.num_workers)


def fit(config: RunConfig, scan: ScanData, output_dir: str | Path, *, device: str = "cpu",
        loggers=(), callbacks=(), datamodule: PtychoDataModule | None = None,
        ckpt_path: Path | None = None) -> TrainResult:
    """Train PtychoPINN on ``scan`` (continuing from ``ckpt_path`` when given); rank 0
    writes model.pt and config.json into ``output_dir`` (checkpoints/ beside them)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.execution.seed, workers=True, verbose=False)
    datamodule = datamodule or build_datamodule(config, scan)
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
        save_model(module.model, config, output_dir)
    return TrainResult(
        model=module.model.eval(), config=config, output_dir=output_dir, seconds=seconds,
        epochs=trainer.current_epoch, global_step=trainer.global_step,
        final_metrics={key: float(value) for key, value in trainer.callback_metrics.items()},
        n_train_groups=len(datamodule.train_indices),
        n_val_groups=len(datamodule.val_indices),
        object_gain=float(module.model.log_object_gain.detach().exp()))


def save_model(model: PtychoPINN, config: RunConfig, folder: str | Path) -> list[Path]:
    """model.pt (weights, probe included) and config.json: all :func:`load_model` needs."""
    folder = Path(folder)
    with atomic_path(folder / MODEL_FILE) as tmp:
        torch.save(model.state_dict(), tmp)
    atomic_write_json(folder / CONFIG_FILE, config.to_dict())
    return [folder / MODEL_FILE, folder / CONFIG_FILE]


# -- loading ----------------------------------------------------------------------------
class LoadedModel(NamedTuple):
    model: PtychoPINN
    """In eval mode, on the device asked for."""
    config: RunConfig


def load_model(model_dir: str | Path, device: str = "cpu") -> LoadedModel:
    """A trained PtychoPINN and its RunConfig from a training output folder, weights read
    with ``weights_only=True``. Raises ModelFolderError / ModelFileError naming the file."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ModelFolderError(model_dir, "missing")
    if not model_dir.is_dir():
        raise ModelFolderError(model_dir, "is_file")
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (model_dir / name).is_file():
            raise ModelFolderError(model_dir, "incomplete", name)
    try:  # a model folder may come from anyone: its files stay inside it, sized
        confined_path(model_dir, MODEL_FILE, "weights file")
        check_size(confined_path(model_dir, CONFIG_FILE, "config file"), MAX_JSON_BYTES,
                   "config file")
        check_size(model_dir / MODEL_FILE, available_memory_bytes(), "weights file")
    except UntrustedFileError as exc:
        raise ModelFileError(str(exc)) from exc
    try:
        config = RunConfig.load(model_dir / CONFIG_FILE)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ModelFileError(f"{model_dir / CONFIG_FILE}: not a readable training config "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    try:
        state = torch.load(model_dir / MODEL_FILE, map_location="cpu", weights_only=True)
        n = config.model.patch_size_px
        model = PtychoPINN(config.model, torch.ones(n, n, dtype=torch.complex64))
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - damaged zip, refused pickle, wrong tensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelFileError(f"{model_dir / MODEL_FILE}: not readable weights for its "
                             f"config.json ({type(exc).__name__}: {first[:200]})") from exc
    return LoadedModel(model.to(device).eval(), config)


def group_scan(scan: ScanData, config: RunConfig, n_groups: int | None = None,
               indices: np.ndarray | None = None) -> GroupedScan:
    """The scan's groups for a model trained with ``config``; a scan the model cannot take
    raises ScanModelMismatch or DataContractError (before anything is written).

    ``indices`` (G, C) integer pattern indices use those groups as given (e.g. another
    implementation's, to compare like with like) instead of drawing them; ``n_groups`` then
    keeps the first G."""
    n = config.model.patch_size_px
    if scan.patch_size != n:
        raise ScanModelMismatch(f"{scan.path}: patterns are {scan.patch_size} px but the "
                                f"model was trained on {n} px")
    if indices is None:
        return build_grouped_scan(scan, dataclasses.replace(config.data, n_groups=n_groups))
    indices = np.asarray(indices)
    c = config.model.n_channels
    n_points = scan.diffraction.shape[0]
    if (indices.ndim != 2 or indices.shape[1] != c or not np.issubdtype(indices.dtype,
                                                                         np.integer)):
        raise ScanModelMismatch(f"group indices: shape {indices.shape} {indices.dtype}; "
                                f"integer (groups, {c}) expected for gridsize "
                                f"{config.data.gridsize}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_points):
        raise ScanModelMismatch(f"group indices: values {indices.min()}..{indices.max()} "
                                f"outside the scan's {n_points} patterns")
    indices = indices[:n_groups] if n_groups else indices
    return GroupedScan(scan, indices.astype(np.int64), compute_norm_factor(scan.diffraction))


# -- reconstruction ---------------------------------------------------------------------
@dataclass(frozen=True)
class Reconstruction:
    """A stitched object and how it was made.

    ``object`` (H, W) complex64 and ``weight`` (H, W) float32 coverage, in the scan's
    object frame when it has ``objectGuess`` (then ``metrics`` are filled), else in a frame
    bounding the patches whose pixel (0, 0) sits at scan position ``origin_xy`` (x, y)."""

    object: np.ndarray
    weight: np.ndarray
    origin_xy: np.ndarray
    crop_px: int
    """Central crop stitched (crop mode) and the border trimmed before scoring."""
    n_groups: int
    n_patterns: int
    seconds: float
    device: str
    title: str
    """What the picture's title says: scan, groups, scores."""
    metrics: dict[str, float] | None = None
    ground_truth: np.ndarray | None = None
    """objectGuess where covered (zero elsewhere), when the scan has one."""

    def summary(self) -> dict:
        """JSON-able figures: counts, time, device, and metrics when scored."""
        out = {"n_groups": self.n_groups, "n_patterns": self.n_patterns,
               "seconds": self.seconds, "device": self.device}
        if self.metrics is not None:
            out["metrics"] = self.metrics
        return out

    def save(self, folder: str | Path) -> list[Path]:
        """reconstruction.npz, reconstruction.png and (when scored) metrics.json."""
        from ptycho_torch.figures import save_reconstruction_png

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        obj = self.object
        atomic_savez(folder / "reconstruction.npz", object=obj, amplitude=np.abs(obj),
                     phase=np.angle(obj), weight=self.weight, origin_xy=self.origin_xy)
        written = [folder / "reconstruction.npz"]
        if self.metrics is not None:
            atomic_write_json(folder / "metrics.json", self.metrics)
            written.append(folder / "metrics.json")
        shown, title = obj, self.title
        if self.ground_truth is not None:
            shown = global_phase_aligned(obj, self.ground_truth)
            title += "\n(constant phase offset to the truth removed for display)"
        save_reconstruction_png(folder / "reconstruction.png", shown, self.ground_truth, title)
        return [*written, folder / "reconstruction.png"]


@torch.inference_mode()
def predict_and_stitch(model: PtychoPINN, grouped: GroupedScan, shape: tuple[int, int],
                       origin_xy: np.ndarray, device: str, batch_size: int, crop: int,
                       progress: bool = True, on_batch=None, recorder=None,
                       stitch_weight: StitchWeight = StitchWeight.CROP
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over every group and stitch on the device, batch by batch.

    Returns the stitched object (H, W) complex64 and its coverage weight (H, W) float32.
    ``on_batch(batch_idx, batch, out)`` sees each batch's inputs and ForwardOutput; a
    patch-stats ``recorder`` is armed for its first batches only (forward and stitching
    instrumented). ``stitch_weight``: see :class:`ptycho_torch.config.StitchWeight`.
    """
    weight = probe_weight(model.physics.probe) if StitchWeight(stitch_weight) == "probe" \
        else None
    stitcher = Stitcher(shape, origin_xy, crop, device, patch_weight=weight)
    loader = torch.utils.data.DataLoader(grouped, batch_size=batch_size, shuffle=False)
    from tqdm.auto import tqdm

    for batch_idx, batch in enumerate(tqdm(loader, desc="inference", disable=not progress,
                                           unit="batch")):
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        armed = recorder is not None and recorder.arm(model, "inference", batch_idx)
        out = model(batch["diffraction"], batch["offsets"], batch["norm_factor"])
        crops = stitcher.add(out.object.reshape(-1, *out.object.shape[-2:]),
                             batch["positions"].reshape(-1, 2))
        if armed:
            recorder.observe("stitch_crop_amplitude", crops.abs())
            recorder.disarm(model)
        if on_batch is not None:
            on_batch(batch_idx, batch, out)
    return stitcher.result()


def evaluate(obj: np.ndarray, weight: np.ndarray, gt: np.ndarray, crop: int) -> dict:
    """Metrics on the covered region of the object frame, trimmed by half a crop."""
    rows, cols = covered_box(weight, border=crop // 2)
    return compute_metrics(obj[rows, cols], gt[rows, cols])


def reconstruct(model: PtychoPINN, scan: ScanData, config: RunConfig,
                inference: InferenceConfig | None = None, *, device: str | None = None,
                grouped: GroupedScan | None = None, recorder=None, on_batch=None,
                progress: bool = True) -> Reconstruction:
    """Reconstruct ``scan`` with a model trained under ``config``; scored against the
    scan's objectGuess when it has one. ``grouped``: the groups from :func:`group_scan`,
    if already built; ``recorder``/``on_batch``: see :func:`predict_and_stitch`."""
    inference = inference or InferenceConfig()
    if device is None:
        device = next(model.parameters()).device.type
    model = model.to(device)  # a GPU fit hands its model back on the CPU (Lightning teardown)
    n = config.model.patch_size_px
    if grouped is None:
        grouped = group_scan(scan, config, inference.n_groups)
    crop = inference.stitch_crop_px or default_crop(n)
    truth = scan.object_guess
    positions = grouped.positions.reshape(-1, 2).numpy()
    shape, origin = canvas_frame(positions, n, None if truth is None else truth.shape)
    started = time.perf_counter()
    obj, weight = predict_and_stitch(model, grouped, shape, origin, device,
                                     inference.inference_batch_size, crop, progress,
                                     on_batch, recorder, inference.stitch_weight)
    seconds = time.perf_counter() - started
    metrics = None if truth is None else evaluate(obj, weight, truth, crop)
    title = f"{scan.path.name}: {len(grouped)} groups"
    if metrics:
        title += (f" | amp SSIM {metrics['amp_ssim']:.3f}, "
                  f"phase SSIM {metrics['phase_ssim']:.3f}")
    logger.info("reconstructed %d patterns in %.2f s on %s", positions.shape[0], seconds,
                device)
    if metrics:
        logger.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return Reconstruction(
        object=obj, weight=weight, origin_xy=origin, crop_px=crop, n_groups=len(grouped),
        n_patterns=int(positions.shape[0]), seconds=seconds, device=device, title=title,
        metrics=metrics, ground_truth=None if truth is None else np.where(weight > 0, truth, 0))
