"""Stitch predicted object patches into the full object (streamed, on the patches' device)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ptycho_torch.physics import place_patches


def default_crop(n: int) -> int:
    """Central crop kept from each patch when stitching: 20 px at N = 64 (the reference)."""
    return max(4, round(n * 20 / 64))


def canvas_frame(positions_xy: np.ndarray, n: int,
                 object_shape: tuple[int, int] | None = None) -> tuple[tuple[int, int], np.ndarray]:
    """Canvas (H, W) and origin (x0, y0) in scan coordinates.

    With a ground-truth object the canvas is the object's own frame (origin 0), so the
    stitched result and objectGuess align pixel for pixel; otherwise it bounds the patches.
    """
    if object_shape is not None:
        return (int(object_shape[0]), int(object_shape[1])), np.zeros(2)
    lo = np.floor(positions_xy.min(axis=0) - n / 2)
    hi = np.ceil(positions_xy.max(axis=0) + n / 2)
    width, height = (hi - lo + 1).astype(int)
    return (int(height), int(width)), lo


def probe_weight(probe: Tensor) -> Tensor:
    """(N, N) stitching weight |P|^2 / max |P|^2: each patch counts where it was lit."""
    intensity = probe.abs().float() ** 2
    return intensity / intensity.max().clamp_min(1e-30)


class Stitcher:
    """Accumulates central crops of patches at their positions; ``result`` averages overlaps.

    Plain averaging (the reference): sum of placed crops / (sum of placed ones + 1e-9).
    With ``patch_weight`` (an (N, N) map, e.g. :func:`probe_weight`) whole patches are
    averaged with that weight instead, sum(w O) / (sum w + 1e-9), inside the same covered
    region as the crops (outside it the result is 0), so both modes score the same pixels.
    Memory is the canvas only, whatever the number of patches.
    """

    def __init__(self, shape: tuple[int, int], origin_xy: np.ndarray, crop: int,
                 device: torch.device | str = "cpu", patch_weight: Tensor | None = None):
        self.shape = shape
        self.crop = crop
        self.origin = torch.as_tensor(origin_xy, dtype=torch.float32, device=device)
        self.numerator = torch.zeros(shape, dtype=torch.complex64, device=device)
        self.weight = torch.zeros(shape, dtype=torch.float32, device=device)
        self.patch_weight = None
        if patch_weight is not None:
            self.patch_weight = patch_weight.to(device=device, dtype=torch.float32)
            self.weight_sum = torch.zeros(shape, dtype=torch.float32, device=device)
        self.n_placed = 0

    def add(self, patches: Tensor, positions_xy: Tensor) -> Tensor:
        """patches (P, N, N) complex64; positions_xy (P, 2) float px (x, y), patch centres.
        Returns the (P, crop, crop) central crops that were placed."""
        n = patches.shape[-1]
        lo = n // 2 - self.crop // 2
        crops = patches[:, lo : lo + self.crop, lo : lo + self.crop]
        # Patch index n/2 sits at the position; crop index crop/2 is patch index lo + crop/2.
        centre_shift = (lo + self.crop / 2) - n / 2
        centres = positions_xy.to(torch.float32) - self.origin + centre_shift
        ones = torch.ones_like(crops.real, dtype=torch.float32)
        self.weight += place_patches(ones, centres, self.shape)
        if self.patch_weight is None:
            self.numerator += place_patches(crops.to(torch.complex64), centres, self.shape)
        else:
            if self.patch_weight.shape != patches.shape[-2:]:
                raise ValueError(f"patch weight {tuple(self.patch_weight.shape)} does not "
                                 f"match patches {tuple(patches.shape[-2:])}")
            weights = self.patch_weight.expand(patches.shape[0], n, n)
            full_centres = positions_xy.to(torch.float32) - self.origin
            self.numerator += place_patches(patches.to(torch.complex64) * weights, full_centres,
                                            self.shape)
            self.weight_sum += place_patches(weights.contiguous(), full_centres, self.shape)
        self.n_placed += patches.shape[0]
        return crops

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Stitched object (H, W) complex64 and coverage weight (H, W) float32 (the placed
        crops' count, which defines the covered region in both modes)."""
        if self.patch_weight is None:
            obj = self.numerator / (self.weight + 1e-9)
        else:
            obj = torch.where(self.weight > 0, self.numerator / (self.weight_sum + 1e-9), 0)
        return obj.cpu().numpy(), self.weight.cpu().numpy()


def covered_box(weight: np.ndarray, border: int) -> tuple[slice, slice]:
    """Bounding box of covered pixels (weight > 0), trimmed by ``border`` on each side."""
    rows = np.flatnonzero(weight.max(axis=1) > 0)
    cols = np.flatnonzero(weight.max(axis=0) > 0)
    if rows.size == 0:
        raise ValueError("nothing was stitched")
    r0, r1 = rows[0] + border, rows[-1] + 1 - border
    c0, c1 = cols[0] + border, cols[-1] + 1 - border
    if r1 - r0 < 8 or c1 - c0 < 8:
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))
