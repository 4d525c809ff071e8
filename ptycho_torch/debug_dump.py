"""Inference debug dump (--debug-dump DIR): what the forward path and the stitcher saw.

Files: patch_amplitudes.png (first 16 predicted patch amplitudes), offsets.json,
stats.json, canvas.json, reconstruction.npz and reconstruction.png (copies of the stitched
result); torch_patch_stats.json and torch_patch_grid.png come from the patch-stats recorder
when --log-patch-stats is on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ptycho_torch.model import ForwardOutput
from tracking.files import atomic_savefig, atomic_write_json
from tracking.patch_stats import build_grid, compute_patch_stats

N_GRID = 16


class DebugDump:
    """Streams per-batch summaries (no per-pattern tensors kept beyond the first 16)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.first_amplitudes: list[torch.Tensor] = []
        self.n_kept = 0
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.minimum = np.inf
        self.maximum = -np.inf
        self.var_zero_mean_sum = 0.0
        self.positions: list[np.ndarray] = []

    def on_batch(self, batch_idx: int, batch: dict, out: ForwardOutput) -> None:
        amp = out.object.abs().detach()
        if self.n_kept < N_GRID:
            take = amp.reshape(-1, *amp.shape[-2:])[: N_GRID - self.n_kept].float().cpu()
            self.first_amplitudes.append(take)
            self.n_kept += take.shape[0]
        # the batch's statistics as patch stats define them; pooled over batches here
        stats = compute_patch_stats(amp)
        n_pixels = amp.numel()
        self.count += n_pixels
        self.total += stats["global_mean"] * n_pixels
        self.total_sq += (stats["global_std"] ** 2 + stats["global_mean"] ** 2) * n_pixels
        self.minimum = min(self.minimum, stats["min"])
        self.maximum = max(self.maximum, stats["max"])
        self.var_zero_mean_sum += stats["var_zero_mean"] * stats["n_patches"]
        self.positions.append(batch["positions"].reshape(-1, 2).cpu().numpy())

    def write(self, obj: np.ndarray, weight: np.ndarray, patch_size: int,
              reconstruction_dir: Path) -> list[Path]:
        """Write every dump file; returns their paths."""
        self.folder.mkdir(parents=True, exist_ok=True)
        positions = np.concatenate(self.positions) if self.positions else np.zeros((0, 2))
        offsets = positions - positions.mean(axis=0) if len(positions) else positions
        n_patches = len(positions)
        mean = self.total / max(self.count, 1)
        canvas_amp = np.abs(obj)[weight > 0]
        written = [
            self._json("offsets.json", {
                "count": int(len(offsets)),
                "first_offsets_xy": offsets[:16].tolist(),
                "dx_mean": float(offsets[:, 0].mean()) if len(offsets) else 0.0,
                "dx_std": float(offsets[:, 0].std()) if len(offsets) else 0.0,
                "dy_mean": float(offsets[:, 1].mean()) if len(offsets) else 0.0,
                "dy_std": float(offsets[:, 1].std()) if len(offsets) else 0.0,
            }),
            self._json("stats.json", {
                "patch_amplitude": {
                    "mean": mean,
                    "std": float(np.sqrt(max(self.total_sq / max(self.count, 1) - mean**2,
                                             0.0))),
                    "min": self.minimum,
                    "max": self.maximum,
                    "var_zero_mean": self.var_zero_mean_sum / max(n_patches, 1),
                    "n_patches": n_patches,
                },
                "canvas_amplitude": {
                    "mean": float(canvas_amp.mean()) if canvas_amp.size else 0.0,
                    "std": float(canvas_amp.std()) if canvas_amp.size else 0.0,
                    "min": float(canvas_amp.min()) if canvas_amp.size else 0.0,
                    "max": float(canvas_amp.max()) if canvas_amp.size else 0.0,
                },
            }),
            self._json("canvas.json", {
                "patch_size": patch_size,
                "canvas_size": list(obj.shape),
                "n_patch_slots": n_patches,
                "max_abs_dx": float(np.abs(offsets[:, 0]).max()) if len(offsets) else 0.0,
                "max_abs_dy": float(np.abs(offsets[:, 1]).max()) if len(offsets) else 0.0,
            }),
            self._grid(),
        ]
        for name in ("reconstruction.npz", "reconstruction.png"):
            source = reconstruction_dir / name
            if source.exists() and source.parent.resolve() != self.folder.resolve():
                shutil.copy2(source, self.folder / name)
                written.append(self.folder / name)
        return written

    def _json(self, name: str, payload: dict) -> Path:
        atomic_write_json(self.folder / name, payload)
        return self.folder / name

    def _grid(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        patches = torch.cat(self.first_amplitudes) if self.first_amplitudes else torch.zeros(
            1, 8, 8)
        grid = build_grid(patches, nrow=4)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(grid.permute(1, 2, 0).numpy())
        ax.set_title(f"first {patches.shape[0]} predicted patch amplitudes (each scaled)")
        ax.axis("off")
        path = self.folder / "patch_amplitudes.png"
        atomic_savefig(path, fig, dpi=100)
        plt.close(fig)
        return path
