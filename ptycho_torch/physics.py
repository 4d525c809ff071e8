"""Forward physics of ptychography: translation, patch extract/place, probe, far field.

Coordinates: an image pixel ``(row, col)`` sits at coordinate ``(y, x) = (row, col)``.
A patch of size N "centred at (xc, yc)" holds the object at
``(yc - N/2 + i, xc - N/2 + j)`` for patch indices ``(i, j)``, so patch index N/2 is the
centre. All resampling is bilinear with zero fill, written as products with banded "tent"
matrices ``W[i, k] = max(0, 1 - |k - (start + i)|)``: exact at integer shifts, linear,
deterministic on every device, and its adjoint is the transposed product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _tent_matrix(n_out: int, n_in: int, start: Tensor) -> Tensor:
    """(B, n_out, n_in) bilinear sampling weights; row i samples the input at start_b + i."""
    i = torch.arange(n_out, device=start.device, dtype=start.dtype)
    k = torch.arange(n_in, device=start.device, dtype=start.dtype)
    distance = k[None, None, :] - (start[:, None, None] + i[None, :, None])
    return (1.0 - distance.abs()).clamp_min(0.0)


def _apply_real_or_complex(fn, x: Tensor) -> Tensor:
    if x.is_complex():
        return torch.complex(fn(x.real), fn(x.imag))
    return fn(x)


def resample(x: Tensor, start_y: Tensor, start_x: Tensor, out_h: int, out_w: int) -> Tensor:
    """Bilinear resampling: ``out[b, i, j] = x[b](start_y[b] + i, start_x[b] + j)``.

    x: (B, H, W) real or complex; start_y, start_x: (B,) float, pixels. Zero outside x.
    Returns (B, out_h, out_w) of x's dtype.
    """
    real_dtype = x.real.dtype if x.is_complex() else x.dtype
    wy = _tent_matrix(out_h, x.shape[-2], start_y.to(real_dtype))
    wx = _tent_matrix(out_w, x.shape[-1], start_x.to(real_dtype))
    return _apply_real_or_complex(lambda t: wy @ t @ wx.transpose(-1, -2), x)


def resample_adjoint(p: Tensor, start_y: Tensor, start_x: Tensor, h: int, w: int) -> Tensor:
    """Adjoint of :func:`resample`: (B, out_h, out_w) -> (B, h, w)."""
    real_dtype = p.real.dtype if p.is_complex() else p.dtype
    wy = _tent_matrix(p.shape[-2], h, start_y.to(real_dtype))
    wx = _tent_matrix(p.shape[-1], w, start_x.to(real_dtype))
    return _apply_real_or_complex(lambda t: wy.transpose(-1, -2) @ t @ wx, p)


def translate(x: Tensor, shift_xy: Tensor) -> Tensor:
    """Move content by +shift: ``out(y, x) = x(y - dy, x - dx)``, bilinear, zero fill.

    x: (B, H, W) real or complex; shift_xy: (B, 2) float pixels as (dx, dy).
    The adjoint of ``translate(., t)`` is ``translate(., -t)``.
    """
    h, w = x.shape[-2:]
    return resample(x, -shift_xy[:, 1], -shift_xy[:, 0], h, w)


def _window_index(centers_xy: Tensor, n: int, h: int, w: int):
    """Rows, cols (B, n+1) of the integer windows under n-patches, validity, and fractions."""
    corner = centers_xy - n / 2
    origin = torch.floor(corner)
    frac = corner - origin
    ar = torch.arange(n + 1, device=centers_xy.device)
    rows = origin[:, 1].long()[:, None] + ar
    cols = origin[:, 0].long()[:, None] + ar
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    return rows.clamp(0, h - 1), cols.clamp(0, w - 1), valid, frac[:, 1], frac[:, 0]


def extract_patches(obj: Tensor, centers_xy: Tensor, n: int) -> Tensor:
    """Patches of side n centred at subpixel positions.

    obj: (H, W) real or complex object; centers_xy: (B, 2) float pixels (x, y).
    Returns (B, n, n): ``patch[b, i, j] = obj(yc - n/2 + i, xc - n/2 + j)``, zero outside.
    """
    rows, cols, valid, fy, fx = _window_index(centers_xy, n, *obj.shape[-2:])
    window = obj[rows[:, :, None], cols[:, None, :]] * valid
    return resample(window, fy, fx, n, n)


def place_patches(patches: Tensor, centers_xy: Tensor, shape: tuple[int, int]) -> Tensor:
    """Adjoint of :func:`extract_patches`: sum patches into an (H, W) canvas.

    patches: (B, n, n) real or complex; centers_xy: (B, 2) float pixels (x, y).
    Returns (H, W) of the patches' dtype; what falls outside the canvas is dropped.
    """
    n = patches.shape[-1]
    rows, cols, valid, fy, fx = _window_index(centers_xy, n, *shape)
    window = resample_adjoint(patches, fy, fx, n + 1, n + 1) * valid
    canvas = patches.new_zeros(shape)
    rr = rows[:, :, None].expand(-1, -1, n + 1).reshape(-1)
    cc = cols[:, None, :].expand(-1, n + 1, -1).reshape(-1)
    return canvas.index_put((rr, cc), window.reshape(-1), accumulate=True)


def disk_mask(n: int, radius: float, device=None) -> Tensor:
    """(n, n) float mask of pixels within ``radius`` of the centre index n/2."""
    r = torch.arange(n, device=device, dtype=torch.float32) - n / 2
    return ((r[:, None] ** 2 + r[None, :] ** 2) < radius**2).to(torch.float32)


def normalize_probe(probe: Tensor, probe_scale: float = 4.0) -> Tensor:
    """Reference probe normalization ``P / (probe_scale * mean|P| inside r < N/4)``.

    probe: (N, N) complex. Returns (N, N) complex with mean |P| = 1/probe_scale in the disk.
    """
    n = probe.shape[-1]
    mask = disk_mask(n, n / 4, device=probe.device)
    mean_abs = (probe.abs() * mask).sum() / mask.sum()
    return probe / (probe_scale * mean_abs)


def far_field_intensity(psi: Tensor) -> Tensor:
    """|fftshift(fft2(psi, norm="ortho"))|^2 over the last two axes; zero frequency centred.

    psi: (..., N, N) complex exit wave. Returns (..., N, N) float, same total as |psi|^2.
    """
    spectrum = torch.fft.fftshift(torch.fft.fft2(psi, norm="ortho"), dim=(-2, -1))
    return spectrum.real**2 + spectrum.imag**2


def far_field_amplitude(psi: Tensor) -> Tensor:
    """|fftshift(fft2(psi, norm="ortho"))|: (..., N, N) complex -> (..., N, N) float."""
    return torch.sqrt(far_field_intensity(psi).clamp_min(1e-12))


def intensity_scale(nphotons: float, n: int) -> float:
    """Reference physics scale ``s = sqrt(nphotons) / (N/2)``: s * X_norm is in sqrt(counts)."""
    return math.sqrt(nphotons) / (n / 2)


def merge_and_reextract(patches: Tensor, offsets_xy: Tensor, mask: Tensor) -> Tensor:
    """Gridsize > 1: average overlapping channel patches on a shared object, re-extract each.

    patches: (B, C, N, N) complex, channel c centred at group offset ``offsets_xy[:, c]``
    (B, C, 2) pixels (x, y). mask: (N, N) float, the part of each patch that contributes
    (central N/2 square in the reference). Returns (B, C, N, N): channel c is
    ``sum_c' T(d_c' - d_c)[m o_c'] / (sum_c' T(d_c' - d_c)[m] + 1e-3)``; the numerator is
    masked too, so borders no patch covers stay zero.
    """
    b, c, n, _ = patches.shape
    rel = offsets_xy[:, None, :, :] - offsets_xy[:, :, None, :]  # (B, c_out, c_in, 2)
    masked = (patches * mask)[:, None].expand(b, c, c, n, n)
    weights = mask.to(patches.real.dtype)[None, None].expand(b, c, c, n, n)
    shift = rel.reshape(-1, 2)
    num = translate(masked.reshape(-1, n, n), shift).reshape(b, c, c, n, n).sum(dim=2)
    den = translate(weights.reshape(-1, n, n), shift).reshape(b, c, c, n, n).sum(dim=2)
    return num / (den + 1e-3)


class ForwardModel(nn.Module):
    """Illumination and far-field propagation with a fixed, normalized probe.

    Buffers: ``probe`` (N, N) complex64 normalized per the reference; ``merge_mask`` (N, N).
    """

    def __init__(self, probe: Tensor, probe_scale: float = 4.0, probe_mask: bool = False):
        super().__init__()
        probe = torch.as_tensor(probe).to(torch.complex64)
        n = probe.shape[-1]
        probe_n = normalize_probe(probe, probe_scale)
        if probe_mask:
            probe_n = probe_n * disk_mask(n, n / 4)
        self.register_buffer("probe", probe_n)
        square = torch.zeros(n, n)
        square[n // 4 : n // 4 + n // 2, n // 4 : n // 4 + n // 2] = 1.0
        self.register_buffer("merge_mask", square)

    @property
    def n(self) -> int:
        return self.probe.shape[-1]

    def merge(self, patches: Tensor, offsets_xy: Tensor) -> Tensor:
        """(B, C, N, N) complex -> (B, C, N, N) complex; see :func:`merge_and_reextract`."""
        return merge_and_reextract(patches, offsets_xy, self.merge_mask)

    def illuminate(self, obj_patches: Tensor) -> Tensor:
        """Exit wave psi = O * P: (B, C, N, N) complex."""
        return obj_patches * self.probe

    def propagate(self, psi: Tensor) -> Tensor:
        """Far-field intensity |F psi|^2 (orthonormal, centred): (B, C, N, N) float."""
        return far_field_intensity(psi)

    def forward(self, obj_patches: Tensor) -> Tensor:
        return self.propagate(self.illuminate(obj_patches))
