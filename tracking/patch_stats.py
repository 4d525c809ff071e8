"""Per-patch statistics of the forward path: pure functions, and a recorder that writes them.

Stages (docs/patch_stats.md): input_raw, input_normalized, object_amplitude,
object_phase, predicted_amplitude; inference adds stitch_crop_amplitude (what the stitcher
places). For every patch: mean, var (unbiased), var_zero_mean (mean of (x - patch mean)^2),
min, max; per batch: global_mean, global_std, var_zero_mean (mean over patches), min, max,
and running min/max across the recorder's instrumented batches.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

STAGES = ("input_raw", "input_normalized", "object_amplitude", "object_phase",
          "predicted_amplitude")
PER_PATCH_KEYS = ("mean", "var", "var_zero_mean", "min", "max")
BATCH_KEYS = ("global_mean", "global_std", "var_zero_mean", "min", "max")
MAX_PER_PATCH = 256  # per-patch lists keep the first 256 patches; batch stats use all
STATS_FILE = "torch_patch_stats.json"
GRID_FILE = "torch_patch_grid.png"
# grid rows of the first instrumented batch of each stage name: label -> stage
GRID_ROWS = {"input": "input_normalized", "object amplitude": "object_amplitude",
             "predicted amplitude": "predicted_amplitude"}


def compute_patch_stats(x: Tensor) -> dict:
    """Statistics of a (..., H, W) real tensor, each (H, W) slice one patch.

    Returns {"n_patches", "global_mean", "global_std", "var_zero_mean", "min", "max",
    "per_patch": {"mean", "var", "var_zero_mean", "min", "max": lists}} as Python floats.
    """
    patches = x.detach().reshape(-1, x.shape[-2] * x.shape[-1]).to(torch.float64)
    mean = patches.mean(dim=1)
    var_zero_mean = (patches - mean[:, None]).pow(2).mean(dim=1)
    n = patches.shape[1]
    var = var_zero_mean * (n / max(n - 1, 1))
    per_patch = torch.stack([mean, var, var_zero_mean, patches.amin(dim=1),
                             patches.amax(dim=1)])
    summary = torch.stack([patches.mean(), patches.std(correction=0), var_zero_mean.mean(),
                           patches.min(), patches.max()])
    per_patch, summary = per_patch[:, :MAX_PER_PATCH].cpu(), summary.cpu()  # one transfer each
    stats = {"n_patches": int(patches.shape[0])}
    stats.update({key: float(value) for key, value in zip(BATCH_KEYS, summary.tolist(),
                                                          strict=True)})
    stats["per_patch"] = {key: row for key, row in zip(PER_PATCH_KEYS, per_patch.tolist(),
                                                       strict=True)}
    return stats


def compact_record(record: dict) -> dict:
    """A record without its per-patch lists (those stay in the JSON file): the log line."""
    stages = {stage: {k: v for k, v in stats.items() if k != "per_patch"}
              for stage, stats in record["stages"].items()}
    return {**record, "stages": stages}


def flat_metrics(record: dict) -> dict[str, float]:
    """A record as flat metric names ``patch/<stage_name>/<stage>/<stat>`` (plus the
    record-level scales as ``patch/<stage_name>/<name>``)."""
    name = record["stage_name"]
    metrics = {}
    for key in ("global_mean", "global_std", "var_zero_mean", "mean_input_scale",
                "physics_scale", "object_gain"):
        if key in record:
            metrics[f"patch/{name}/{key}"] = float(record[key])
    for stage, stats in record["stages"].items():
        for key in (*BATCH_KEYS, "running_min", "running_max"):
            metrics[f"patch/{name}/{stage}/{key}"] = float(stats[key])
    return metrics


class PatchStatsRecorder:
    """Collects records for the first ``limit`` batches of each stage name, writes them.

    Usage: ``recorder.arm(model, name, step)`` before a batch, ``recorder.disarm(model)``
    after it; while armed the model hands its stages to ``observe_stages``, and disarming
    finishes the record, writes JSON and PNG and tells listeners. Past the limit nothing is
    armed, so nothing is computed, kept or synchronized.
    """

    def __init__(self, limit: int, out_dir: str | Path, extra_dirs: tuple[Path, ...] = ()):
        if limit < 1:
            raise ValueError(f"patch stats limit must be >= 1, got {limit}")
        self.limit = limit
        self.out_dirs = (Path(out_dir), *map(Path, extra_dirs))
        self.records: list[dict] = []
        self.counts: Counter[str] = Counter()
        self.listeners: list = []
        self._running: dict[tuple[str, str], tuple[float, float]] = {}
        self._grid_rows: dict[str, dict[str, Tensor]] = {}
        self._grid_dirty = False
        self._current: dict | None = None

    def wants(self, stage_name: str) -> bool:
        return self.counts[stage_name] < self.limit

    def arm(self, target, stage_name: str, step: int, *, epoch: int | None = None,
            force: bool = False) -> bool:
        """Instrument ``target``'s next forward (anything with a ``patch_stats`` attribute,
        e.g. PtychoPINN) if this stage name is still under its limit, or ``force`` (the
        periodic records of ``--patch-stats-every-epochs``); True when armed. The one way
        train, val and inference batches are tapped; pair with :meth:`disarm`. ``epoch``,
        when given, is kept in the record and labels its row of the patch grid."""
        if not (force or self.wants(stage_name)):
            return False
        self.begin(stage_name, step, epoch)
        target.patch_stats = self
        return True

    def disarm(self, target) -> dict | None:
        """Detach from ``target`` and finish the armed record (no-op when not armed)."""
        if getattr(target, "patch_stats", None) is not self:
            return None
        target.patch_stats = None
        return self.end()

    def begin(self, stage_name: str, step: int, epoch: int | None = None) -> None:
        self._current = {"stage_name": stage_name, "batch_idx": self.counts[stage_name],
                         "step": int(step), "stages": {}}
        if epoch is not None:
            self._current["epoch"] = int(epoch)

    def observe(self, stage: str, x: Tensor) -> None:
        """Add one stage's statistics to the armed record (ignored when not armed)."""
        if self._current is None:
            return
        stats = compute_patch_stats(x)
        key = (self._current["stage_name"], stage)
        lo, hi = self._running.get(key, (math.inf, -math.inf))
        lo, hi = min(lo, stats["min"]), max(hi, stats["max"])
        self._running[key] = (lo, hi)
        stats["running_min"], stats["running_max"] = lo, hi
        self._current["stages"][stage] = stats

    def observe_stages(self, tensors: dict[str, Tensor], **scales: float | Tensor) -> None:
        """The forward path's stage tensors (docs/patch_stats.md, "Stages"), each
        (B, C, N, N), and its scalar scales (``mean_input_scale``, ``physics_scale``,
        ``object_gain``) for the armed record; the model calls this while armed."""
        if self._current is None:
            return
        for stage, tensor in tensors.items():
            self.observe(stage, tensor)
        for key, value in scales.items():
            self._current[key] = float(torch.as_tensor(value).detach().double().mean())
        name = self._current["stage_name"]
        if self.counts[name] >= self.limit and "epoch" in self._current:
            name = f"{name} epoch {self._current['epoch']}"  # a periodic record's own row
        if name not in self._grid_rows:
            self._grid_dirty = True
            self._grid_rows[name] = {
                label: tensors[stage][:4].detach().reshape(
                    -1, *tensors[stage].shape[-2:]).float().cpu()
                for label, stage in GRID_ROWS.items() if stage in tensors}

    def end(self) -> dict | None:
        """Finish the armed record: summary keys, log line, files, listeners."""
        record, self._current = self._current, None
        if record is None or not record["stages"]:
            return None
        collapse = record["stages"].get("object_amplitude") or next(
            iter(record["stages"].values()))
        summary = {"stage_name": record["stage_name"], "batch_idx": record["batch_idx"],
                   "step": record["step"], "global_mean": collapse["global_mean"],
                   "global_std": collapse["global_std"],
                   "var_zero_mean": collapse["var_zero_mean"]}
        if "epoch" in record:
            summary["epoch"] = record["epoch"]
        for key in ("mean_input_scale", "physics_scale", "object_gain"):
            if key in record:
                summary[key] = record[key]
        summary["stages"] = record["stages"]
        self.records.append(summary)
        self.counts[record["stage_name"]] += 1
        logger.info("PATCH_STATS %s", json.dumps(compact_record(summary), separators=(",", ":")))
        self.write()
        for listener in self.listeners:
            listener(summary)
        return summary

    def restore(self, records: list[dict], counts: dict[str, int]) -> None:
        """State of an earlier process of the same run (resume): its records and per-stage
        counts, so ``limit`` counts from the run's start. The files on disk already hold
        these records; they are rewritten only when a new record is added."""
        self.records = list(records)
        self.counts = Counter({name: int(n) for name, n in counts.items()})
        for record in self.records:
            for stage, stats in record["stages"].items():
                self._running[(record["stage_name"], stage)] = (stats["running_min"],
                                                                stats["running_max"])

    def write(self) -> list[Path]:
        """Write torch_patch_stats.json and torch_patch_grid.png into every output folder."""
        from tracking.files import atomic_write_json

        written = []
        for folder in self.out_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / STATS_FILE, self.records)
            written.append(folder / STATS_FILE)
            if self._grid_dirty or (self._grid_rows and not (folder / GRID_FILE).exists()):
                save_patch_grid(folder / GRID_FILE, self._grid_rows)
            if (folder / GRID_FILE).exists():
                written.append(folder / GRID_FILE)
        self._grid_dirty = False
        return written

    @property
    def paths(self) -> list[Path]:
        return [folder / name for folder in self.out_dirs for name in (STATS_FILE, GRID_FILE)
                if (folder / name).exists()]


def build_grid(patches: Tensor, nrow: int = 8) -> Tensor:
    """(P, H, W) -> (3, H', W') torchvision grid, each patch scaled to [0, 1] on its own."""
    from torchvision.utils import make_grid

    return make_grid(patches[:, None], nrow=nrow, normalize=True, scale_each=True, padding=2,
                     pad_value=1.0)


def save_patch_grid(path: Path, rows: dict[str, dict[str, Tensor]]) -> None:
    """One labelled grid row per (stage name, kind): normalized input, object amplitude and
    predicted diffraction amplitude of the first instrumented batch of each stage name.
    Drawn with PIL (no matplotlib): cheap enough to redraw whenever a stage name is new."""
    from PIL import Image, ImageDraw

    from tracking.files import atomic_path

    label_h, pad = 14, 6
    strips = []
    for name, kinds in rows.items():
        for kind, patches in kinds.items():
            display = patches[:16]
            if kind in ("input", "predicted amplitude"):
                display = torch.log1p(display.clamp_min(0))  # diffraction spans decades
            zoom = max(1, 48 // display.shape[-1])  # small patches are drawn larger
            display = display.repeat_interleave(zoom, -1).repeat_interleave(zoom, -2)
            grid = build_grid(display, nrow=16).mul(255).round().byte().permute(1, 2, 0)
            strips.append((f"{name}: {kind}", Image.fromarray(grid.numpy())))
    width = max(img.width for _, img in strips) + 2 * pad
    height = sum(img.height + label_h + pad for _, img in strips) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for label, img in strips:
        draw.text((pad, y), label, fill="black")
        canvas.paste(img, (pad, y + label_h))
        y += img.height + label_h + pad
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
