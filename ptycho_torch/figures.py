"""Pictures of reconstructions (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracking.files import atomic_savefig


def save_reconstruction_png(path: Path, obj: np.ndarray, gt: np.ndarray | None,
                            title: str) -> None:
    """Amplitude and phase side by side, ground truth beneath when there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("reconstruction", obj)] + ([("ground truth", gt)] if gt is not None else [])
    # with a truth, both phase panels share its colour range, so colours compare directly
    # (amplitude keeps its own: its absolute scale is the model's gain, not physics)
    phase_range = {}
    if gt is not None:
        covered = np.angle(gt)[np.abs(gt) > 0]
        if covered.size:
            phase_range = {"vmin": float(covered.min()), "vmax": float(covered.max())}
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 4.2 * len(rows)), squeeze=False)
    for (label, img), (ax_a, ax_p) in zip(rows, axes, strict=True):
        for ax, data, name, cmap, limits in (
                (ax_a, np.abs(img), "amplitude", "gray", {}),
                (ax_p, np.angle(img), "phase (rad)", "twilight", phase_range)):
            im = ax.imshow(data, cmap=cmap, **limits)
            ax.set_title(f"{label}: {name}")
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
