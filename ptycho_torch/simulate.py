"""python -m ptycho_torch.simulate: a realistic synthetic ptychographic scan with ground truth.

Object amplitude and phase come from scikit-image's bundled sample photographs; the probe is
a focused beam (circular aperture, slight defocus); positions are a jittered raster with the
requested overlap; diffraction is the orthonormal far-field amplitude with Poisson noise.
The object is split along y into ``train.npz`` (top half) and ``test.npz`` (bottom half).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ptycho_torch import physics
from tracking.files import atomic_savez

logger = logging.getLogger("ptycho_torch.simulate")  # not "__main__" under python -m

# name -> (amplitude image, phase image) from skimage.data (no downloads: bundled files)
OBJECTS = {
    "camera_moon": ("camera", "moon"),
    "astronaut_coffee": ("astronaut", "coffee"),
    "brick_grass": ("brick", "grass"),
}


def _gray_image(name: str, size: tuple[int, int], zoom: float = 1.0) -> np.ndarray:
    """Grayscale sample image in [0, 1], its central 1/zoom part resized to ``size``."""
    from skimage import color, data, transform

    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    if zoom > 1:
        h, w = img.shape
        ch, cw = round(h / zoom), round(w / zoom)
        img = img[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
    img = transform.resize(img.astype(np.float64), size, anti_aliasing=True)
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def make_object(name: str, shape: tuple[int, int], amp_range=(0.35, 1.0),
                phase_range_rad: float = 1.0, zoom: float = 1.0) -> np.ndarray:
    """Complex object (H, W) complex64: amplitude in amp_range, phase in +-phase_range_rad.

    ``zoom`` > 1 magnifies the images (their central 1/zoom part fills the object), so the
    finest features span about ``zoom`` object pixels instead of one.
    """
    amp_name, phase_name = OBJECTS[name]
    amp = amp_range[0] + (amp_range[1] - amp_range[0]) * _gray_image(amp_name, shape, zoom)
    phase = phase_range_rad * (2 * _gray_image(phase_name, shape, zoom) - 1)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def make_probe(n: int, aperture_radius_px: float = 6.0, edge_width_px: float = 2.0,
               defocus_rad: float = 2.5) -> np.ndarray:
    """Focused probe (N, N) complex64: Fourier transform of a defocused, soft-edged pupil.

    The pupil radius (frequency pixels) sets the spot size, about N / 3 across (90 % of the
    intensity); a soft edge keeps the side lobes small (99.7 % of the intensity inside the
    central N/2 square the model reconstructs);
    defocus adds the ring structure and phase curvature of a beam near, not at, its focus.
    """
    k = np.fft.fftshift(np.fft.fftfreq(n)) * n
    kr = np.hypot(k[:, None], k[None, :])
    pupil = 0.5 * (1 - np.tanh((kr - aperture_radius_px) / edge_width_px))
    pupil = pupil * np.exp(1j * defocus_rad * kr**2 / aperture_radius_px**2)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))
    probe /= np.abs(probe).max()
    return probe.astype(np.complex64)


def probe_diameter_px(probe: np.ndarray, energy_fraction: float = 0.9) -> float:
    """Diameter of the centred disk holding ``energy_fraction`` of the probe's intensity."""
    n = probe.shape[0]
    r = np.hypot(*np.meshgrid(np.arange(n) - n / 2, np.arange(n) - n / 2, indexing="ij"))
    intensity = np.abs(probe) ** 2
    order = np.argsort(r.ravel())
    cumulative = np.cumsum(intensity.ravel()[order]) / intensity.sum()
    return 2 * float(r.ravel()[order][np.searchsorted(cumulative, energy_fraction)])


def simulate_scan(n_images: int = 1024, patch_size: int = 64, n_photons: float = 1e6,
                  noise: str = "poisson", overlap: float = 0.65, jitter_fraction: float = 0.1,
                  object_name: str = "camera_moon", seed: int = 0,
                  object_zoom: float = 1.0) -> dict:
    """Simulate one scan over a whole object. Returns arrays and the metadata dict."""
    rng = np.random.default_rng(seed)
    probe = make_probe(patch_size)
    diameter = probe_diameter_px(probe)
    step = diameter * (1 - overlap)
    n_side = max(2, math.ceil(math.sqrt(n_images)))
    margin = patch_size / 2 + 2 * step
    size = math.ceil(2 * margin + (n_side - 1) * step)
    obj = make_object(object_name, (size, size), zoom=object_zoom)
    grid = margin + np.arange(n_side) * step
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    xy = np.stack([gx.ravel(), gy.ravel()], axis=1)[:n_images]
    xy = xy + rng.normal(scale=jitter_fraction * step, size=xy.shape)

    obj_t = torch.from_numpy(obj)
    patches = physics.extract_patches(obj_t, torch.from_numpy(xy), patch_size)
    intensity = physics.far_field_intensity(patches * torch.from_numpy(probe)).double().numpy()
    counts = intensity * (n_photons / intensity.sum(axis=(1, 2)).mean())
    if noise == "poisson":
        counts = rng.poisson(counts)
    diffraction = np.sqrt(counts).astype(np.float32)
    metadata = {
        "generator": "ptycho_torch.simulate",
        "object": object_name,
        "object_zoom": object_zoom,
        "object_shape": [size, size],
        "n_images": int(xy.shape[0]),
        "patch_size": patch_size,
        "nphotons": float(n_photons),
        "noise": noise,
        "overlap": overlap,
        "probe_diameter_px": diameter,
        "scan_step_px": step,
        "jitter_fraction": jitter_fraction,
        "seed": seed,
    }
    return {"object": obj, "probe": probe, "xy": xy, "diffraction": diffraction,
            "metadata": metadata}


def split_scan(scan: dict) -> dict[str, dict]:
    """Split along y at the object's middle row: top -> train, bottom -> test.

    Each half keeps the rows its patches touch, and positions move to that half's frame.
    """
    obj, xy = scan["object"], scan["xy"]
    n = scan["probe"].shape[0]
    middle = obj.shape[0] / 2
    halves = {}
    for name, select in (("train", xy[:, 1] < middle), ("test", xy[:, 1] >= middle)):
        sub = xy[select]
        top = max(0, math.floor(sub[:, 1].min() - n / 2) - 2)
        bottom = min(obj.shape[0], math.ceil(sub[:, 1].max() + n / 2) + 3)
        halves[name] = {
            "diffraction": scan["diffraction"][select],
            "probeGuess": scan["probe"],
            "objectGuess": obj[top:bottom],
            "xcoords": sub[:, 0],
            "ycoords": sub[:, 1] - top,
            "xcoords_start": sub[:, 0],
            "ycoords_start": sub[:, 1] - top,
            "scan_index": np.zeros(len(sub), dtype=np.int64),
            "_metadata": np.array(json.dumps(
                {**scan["metadata"], "split": name, "object_row_offset": top,
                 "n_images": int(select.sum())})),
        }
    return halves


def write_scans(folder: str | Path, scan: dict) -> dict[str, Path]:
    """Split ``scan`` (from :func:`simulate_scan`) and write train.npz and test.npz into
    ``folder``; returns their paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, arrays in split_scan(scan).items():
        paths[name] = folder / f"{name}.npz"
        atomic_savez(paths[name], **arrays)
        logger.info("wrote %s: %d patterns, object %s", paths[name], len(arrays["xcoords"]),
                    arrays["objectGuess"].shape)
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.simulate",
        description="Simulate a ptychographic scan with ground truth; write train.npz and "
                    "test.npz (top and bottom halves of one object).",
    )
    parser.add_argument("--output-dir", default="datasets",
                        help="folder for train.npz and test.npz (default: %(default)s)")
    parser.add_argument("--n-images", type=int, default=1024,
                        help="scan positions over the whole object, split about evenly "
                             "between the files (default: %(default)s)")
    parser.add_argument("--n-photons", type=float, default=1e6,
                        help="mean photons per diffraction pattern (default: %(default)g)")
    parser.add_argument("--noise", choices=["poisson", "none"], default="poisson",
                        help="Poisson counting noise, or exact amplitudes (default: %(default)s)")
    parser.add_argument("--object", choices=sorted(OBJECTS), default="camera_moon",
                        help="amplitude_phase pair of scikit-image sample images "
                             "(default: %(default)s)")
    parser.add_argument("--object-zoom", type=float, default=1.0,
                        help="magnify the sample images: their central 1/zoom part fills the "
                             "object, so the finest features span ~zoom pixels "
                             "(default: %(default)s, the whole image)")
    parser.add_argument("--patch-size", type=int, default=64,
                        help="diffraction pattern and probe side N, pixels (default: %(default)s)")
    parser.add_argument("--overlap", type=float, default=0.65,
                        help="linear overlap of neighbouring probe footprints, 0-1 "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems = []
    if args.n_images < 8:
        problems.append(f"--n-images must be >= 8, got {args.n_images}")
    if args.n_photons <= 0:
        problems.append(f"--n-photons must be > 0, got {args.n_photons}")
    if args.patch_size < 16 or args.patch_size % 8:
        problems.append(f"--patch-size must be a multiple of 8, >= 16, got {args.patch_size}")
    if not 1.0 <= args.object_zoom <= 8.0:
        problems.append(f"--object-zoom must be in [1, 8], got {args.object_zoom}")
    if not 0.0 <= args.overlap < 0.95:
        problems.append(f"--overlap must be in [0, 0.95), got {args.overlap}")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        problems.append(f"--output-dir {out} exists and is not a directory")
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2
    scan = simulate_scan(args.n_images, args.patch_size, args.n_photons, args.noise,
                         args.overlap, object_name=args.object, seed=args.seed,
                         object_zoom=args.object_zoom)
    write_scans(out, scan)
    meta = scan["metadata"]
    logger.info("probe diameter %.1f px, step %.1f px, overlap %.2f, %g photons/pattern",
                meta["probe_diameter_px"], meta["scan_step_px"], meta["overlap"], meta["nphotons"])
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
