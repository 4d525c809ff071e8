"""NPZ data contract: load and validate scans, normalize, group by nearest neighbours, serve.

See docs/data_contract.md. Files are opened with ``allow_pickle=False`` always: an NPZ
holding object arrays is refused, never unpickled.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy.spatial import cKDTree
from torch.utils.data import DataLoader, Dataset

from ptycho_torch.config import DataConfig
from ptycho_torch.errors import DataContractError, GroupCountError
from tracking.untrusted import UntrustedFileError, check_npz_members

logger = logging.getLogger(__name__)


@dataclass
class ScanData:
    """One validated scan. Arrays: diffraction (n, N, N) float32 amplitude; probe (N, N)
    complex64; x, y (n,) float64 pixel positions; object_guess (M, M) complex64 or None."""

    path: Path
    diffraction: np.ndarray
    probe: np.ndarray
    x: np.ndarray
    y: np.ndarray
    x_start: np.ndarray
    y_start: np.ndarray
    scan_index: np.ndarray
    object_guess: np.ndarray | None
    metadata: dict

    @property
    def n_patterns(self) -> int:
        return self.diffraction.shape[0]

    @property
    def patch_size(self) -> int:
        return self.probe.shape[-1]


def _read_key(npz, path: Path, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:  # object arrays need allow_pickle: refused on purpose
        raise DataContractError(
            path, key, "holds pickled Python objects; refused, never unpickled (arrays of "
                       "numbers or text expected)"
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataContractError(path, key, "unreadable array data (damaged or truncated "
                                f"file: {str(exc).splitlines()[0] if str(exc) else exc!r})"
                                ) from exc


REQUIRED_KEYS = {
    "diffraction": "the measured amplitudes, (n, N, N)",
    "probeGuess": "the probe, (N, N) complex",
    "xcoords": "the x scan positions in pixels, (n,)",
    "ycoords": "the y scan positions in pixels, (n,)",
}

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_MAGIC = b"\x80"  # pickle protocol >= 2


def _first_index(mask: np.ndarray) -> str:
    index = tuple(int(i) for i in np.argwhere(mask)[0])
    return str(index[0]) if len(index) == 1 else str(index)


def _check_finite(arr: np.ndarray, path: Path, key: str) -> None:
    bad = ~np.isfinite(arr)
    if np.any(bad):
        raise DataContractError(
            path, key, f"contains NaN or Inf ({int(bad.sum())} value(s), the first at index "
                       f"{_first_index(bad)}); finite values expected")


def _check_real_numeric(arr: np.ndarray, path: Path, key: str) -> None:
    if arr.dtype.kind not in "uif":
        raise DataContractError(path, key, f"dtype {arr.dtype}; real numbers expected")


def _unreadable(path: Path) -> DataContractError:
    """Why a file that np.load refuses is no NPZ archive, told from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:  # e.g. no read permission
        return DataContractError(path, None, f"cannot be read ({exc.strerror or exc})")
    if not head:
        return DataContractError(path, None, "is empty (0 bytes); an NPZ archive expected")
    if head.startswith(_ZIP_MAGIC):
        return DataContractError(path, None, "is a damaged or truncated NPZ archive (the zip "
                                 "cannot be read); an intact NPZ archive expected")
    if head.startswith(_PICKLE_MAGIC):
        return DataContractError(path, None, "is a Python pickle, not an NPZ archive; refused "
                                 "(never unpickled)")
    if head.startswith(_NPY_MAGIC):
        return DataContractError(path, None, "is an unreadable .npy array, not an NPZ archive")
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        first_line = head.decode().strip().splitlines()[0][:24] if head.strip() else ""
        return DataContractError(path, None, f"is a text file (starts {first_line!r}), not an "
                                 "NPZ archive; numpy.savez output expected")
    return DataContractError(path, None, "is not an NPZ archive (no zip signature); "
                             "numpy.savez output expected")


def _missing(path: Path, key: str, found: set[str]) -> DataContractError:
    listed = ", ".join(sorted(found)[:12]) + (", ..." if len(found) > 12 else "")
    where = "key 'diffraction' (or legacy 'diff3d')" if key == "diffraction" else f"key '{key}'"
    return DataContractError(path, None, f"{where} is missing (expected: {REQUIRED_KEYS[key]}); "
                             f"the file holds: {listed or 'no arrays'}")


def load_scan(path: str | Path) -> ScanData:
    """Load and validate one NPZ scan file; raises DataContractError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise DataContractError(path, None, "does not exist (an NPZ file expected)")
    if path.is_dir():
        raise DataContractError(path, None, "is a directory, not a file; an NPZ file expected")
    if not path.is_file():
        raise DataContractError(path, None, "is not a file (an NPZ file expected)")
    try:  # declared array sizes against the archive's bytes, before numpy allocates
        check_npz_members(path)
    except UntrustedFileError as exc:
        raise DataContractError(path, exc.key, exc.reason) from exc
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        # numpy reads a non-zip, non-.npy file as a pickle, which allow_pickle=False refuses
        raise _unreadable(path) from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataContractError(path, None, f"holds a single array {npz.shape} (numpy.save "
                                "output), not an NPZ archive of named arrays (numpy.savez)")
    with npz:
        keys = set(npz.files)
        diff_key = "diffraction" if "diffraction" in keys else "diff3d"
        for key in REQUIRED_KEYS:
            if (diff_key if key == "diffraction" else key) not in keys:
                raise _missing(path, key, keys)
        arrays = {key: _read_key(npz, path, key) for key in keys}
    return _validate(path, arrays, diff_key)


def _validate_coords(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(arrays["xcoords"])
    y = np.asarray(arrays["ycoords"])
    for key, arr in (("xcoords", x), ("ycoords", y)):
        _check_real_numeric(arr, path, key)
        if arr.ndim != 1:
            raise DataContractError(path, key, f"shape {arr.shape}; 1-D (n,) expected")
        _check_finite(arr, path, key)
    n = x.shape[0]
    if n == 0:
        raise DataContractError(path, "xcoords", "is empty; at least one scan position expected")
    if y.shape[0] != n:
        raise DataContractError(path, "ycoords", f"length {y.shape[0]} != xcoords length {n}; "
                                "one (x, y) pair per scan position expected")
    return x.astype(np.float64), y.astype(np.float64)


def _validate_probe(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    probe = np.asarray(arrays["probeGuess"])
    if probe.dtype.kind not in "uifc":
        raise DataContractError(path, "probeGuess", f"dtype {probe.dtype}; numbers expected")
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise DataContractError(path, "probeGuess", f"shape {probe.shape}; square (N, N) expected")
    _check_finite(probe, path, "probeGuess")
    if not np.any(probe):
        raise DataContractError(path, "probeGuess", "is all zero; an illumination expected")
    return probe


def _validate_diffraction(path: Path, arrays: dict[str, np.ndarray], diff_key: str,
                          n: int, big_n: int, probe_shape: tuple) -> np.ndarray:
    diff = np.asarray(arrays[diff_key])
    if np.iscomplexobj(diff):
        raise DataContractError(path, diff_key, f"is complex ({diff.dtype}); measured "
                                "amplitudes, real and >= 0 (sqrt of counts), expected")
    _check_real_numeric(diff, path, diff_key)
    if diff.ndim != 3:
        raise DataContractError(path, diff_key, f"shape {diff.shape}; a stack of 2-D patterns "
                                "(n, N, N) expected")
    if diff.shape[1:] != (big_n, big_n) and diff.shape[:2] == (big_n, big_n):
        logger.warning("%s: '%s' has legacy layout (N, N, n) %s; transposing to (n, N, N)",
                       path, diff_key, diff.shape)
        diff = np.transpose(diff, (2, 0, 1))
    if diff.shape[1:] != (big_n, big_n):
        raise DataContractError(
            path, diff_key, f"patterns {diff.shape[1:]} do not match probeGuess "
                            f"{probe_shape}; patterns and probe of the same N x N expected")
    if diff.shape[0] != n:
        raise DataContractError(
            path, diff_key, f"{diff.shape[0]} patterns but {n} scan positions (xcoords); one "
                            "pattern per position expected"
        )
    # Integer counts (uint16) become float before anything squares them: no overflow.
    diff = diff.astype(np.float32)
    _check_finite(diff, path, diff_key)
    negative = diff < 0
    if np.any(negative):
        raise DataContractError(
            path, diff_key, f"has {int(negative.sum())} negative value(s) (min {diff.min():g}, "
                            f"the first at index {_first_index(negative)}); amplitudes "
                            "(sqrt of counts) >= 0 expected")
    if not np.any(diff):
        raise DataContractError(path, diff_key, "is all zero; measured amplitudes expected")
    return diff


def _optional_coords(path: Path, arrays: dict[str, np.ndarray], key: str,
                     default: np.ndarray) -> np.ndarray:
    if key not in arrays:
        return default
    arr = np.asarray(arrays[key])
    n = default.shape[0]
    _check_real_numeric(arr, path, key)
    if arr.shape != (n,):
        raise DataContractError(path, key, f"shape {arr.shape}; ({n},) expected")
    _check_finite(arr, path, key)
    return arr.astype(np.float64)


def _validate_object(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    if "objectGuess" not in arrays:
        return None
    obj = np.asarray(arrays["objectGuess"])
    if obj.dtype.kind not in "uifc" or obj.ndim != 2:
        raise DataContractError(
            path, "objectGuess", f"shape {obj.shape}, dtype {obj.dtype}; 2-D numbers expected"
        )
    _check_finite(obj, path, "objectGuess")
    return obj.astype(np.complex64)


def _validate_metadata(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    if "_metadata" not in arrays:
        return {}
    raw = arrays["_metadata"]
    if raw.dtype.kind not in "US":
        raise DataContractError(path, "_metadata", f"dtype {raw.dtype}; JSON text expected")
    text = raw.item() if raw.ndim == 0 else "".join(str(v) for v in raw.ravel())
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataContractError(path, "_metadata", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(metadata, dict):
        raise DataContractError(path, "_metadata", "JSON object expected")
    return metadata


def _validate(path: Path, arrays: dict[str, np.ndarray], diff_key: str) -> ScanData:
    """Check every key of the data contract (docs/data_contract.md) in a fixed order."""
    x, y = _validate_coords(path, arrays)
    n = x.shape[0]
    probe = _validate_probe(path, arrays)
    diff = _validate_diffraction(path, arrays, diff_key, n, probe.shape[0], probe.shape)
    obj = _validate_object(path, arrays)
    metadata = _validate_metadata(path, arrays)
    x_start = _optional_coords(path, arrays, "xcoords_start", x)
    y_start = _optional_coords(path, arrays, "ycoords_start", y)
    scan_index = _optional_coords(path, arrays, "scan_index", np.zeros(n)).astype(np.int64)
    return ScanData(
        path=path,
        diffraction=diff,
        probe=probe.astype(np.complex64),
        x=x,
        y=y,
        x_start=x_start,
        y_start=y_start,
        scan_index=scan_index,
        object_guess=obj,
        metadata=metadata,
    )


def compute_norm_factor(diffraction: np.ndarray) -> float:
    """Reference input normalization ``sqrt((N/2)^2 / mean_n sum_hw X^2)``, in float64."""
    n_px = diffraction.shape[-1]
    energy = np.mean(np.sum(diffraction.astype(np.float64) ** 2, axis=(-2, -1)))
    if energy <= 0:
        raise ValueError("diffraction is all zero; cannot normalize")
    return math.sqrt((n_px / 2) ** 2 / energy)


def mean_counts_per_pattern(diffraction: np.ndarray) -> float:
    """Mean total counts per pattern, mean_n sum_hw X^2 (X = sqrt(counts))."""
    return float(np.mean(np.sum(diffraction.astype(np.float64) ** 2, axis=(-2, -1))))


def resolve_nphotons(scan: ScanData, override: float | None) -> float:
    """nphotons from the CLI, else _metadata, else the data's own mean counts per pattern."""
    if override is not None:
        return float(override)
    if "nphotons" in scan.metadata:
        return float(scan.metadata["nphotons"])
    return mean_counts_per_pattern(scan.diffraction)


def _order_as_grid(idx: np.ndarray, x: np.ndarray, y: np.ndarray, g: int) -> np.ndarray:
    """Order a group's members row-major: channel c = row c // g, column c % g."""
    by_row = idx[np.argsort(y[idx], kind="stable")]
    rows = [r[np.argsort(x[r], kind="stable")] for r in by_row.reshape(g, g)]
    return np.concatenate(rows)


def build_groups(x: np.ndarray, y: np.ndarray, gridsize: int, n_neighbors: int,
                 n_groups: int | None, seed: int, path: str | Path = "<scan>") -> np.ndarray:
    """Group scan points into (n_groups, gridsize^2) index arrays, seeded and reproducible.

    gridsize 1: each group is one point. gridsize g > 1: for each seed point, g^2 of its
    K nearest neighbours (itself included), drawn at random, ordered row-major.
    """
    n = x.shape[0]
    c = gridsize**2
    if n < c:
        raise DataContractError(
            path, "xcoords", f"{n} scan points; gridsize {gridsize} needs at least {c} "
                             f"({gridsize}x{gridsize} neighbours per group)"
        )
    if n_groups is not None and n_groups > n:  # one group per seed point
        raise GroupCountError(path, n_groups, n)
    rng = np.random.default_rng(seed)
    if n_groups is None:
        seeds = np.arange(n)
    else:
        seeds = np.sort(rng.choice(n, size=n_groups, replace=False))
    if c == 1:
        return seeds[:, None]
    k = min(max(n_neighbors, c), n)
    points = np.stack([x, y], axis=1)
    _, neighbours = cKDTree(points).query(points[seeds], k=k)
    neighbours = np.asarray(neighbours).reshape(len(seeds), k)
    groups = np.empty((len(seeds), c), dtype=np.int64)
    for row, candidates in enumerate(neighbours):
        members = np.concatenate([[candidates[0]], rng.choice(candidates[1:], c - 1,
                                                               replace=False)])
        groups[row] = _order_as_grid(members, x, y, gridsize)
    return groups


class GroupedScan(Dataset):
    """Grouped patterns of one scan as tensors, one item per group.

    Item: ``diffraction`` (C, N, N) float32 raw amplitude, ``offsets`` (C, 2) float32 pixels
    (x, y) of each channel from the group centre, ``positions`` (C, 2) absolute positions,
    ``norm_factor`` () float32, ``index`` () int64.
    """

    def __init__(self, scan: ScanData, groups: np.ndarray, norm_factor: float):
        self.groups = groups
        positions = np.stack([scan.x, scan.y], axis=1)[groups]  # (G, C, 2)
        centres = positions.mean(axis=1, keepdims=True)
        self.diffraction = torch.from_numpy(scan.diffraction[groups])
        self.positions = torch.from_numpy(positions.astype(np.float32))
        self.offsets = torch.from_numpy((positions - centres).astype(np.float32))
        self.norm_factor = torch.tensor(norm_factor, dtype=torch.float32)

    def __len__(self) -> int:
        return self.groups.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "diffraction": self.diffraction[i],
            "offsets": self.offsets[i],
            "positions": self.positions[i],
            "norm_factor": self.norm_factor,
            "index": torch.tensor(i),
        }


def build_grouped_scan(scan: ScanData, config: DataConfig) -> GroupedScan:
    groups = build_groups(scan.x, scan.y, config.gridsize, config.n_neighbors,
                          config.n_groups, config.seed, scan.path)
    return GroupedScan(scan, groups, compute_norm_factor(scan.diffraction))


class PtychoDataModule(L.LightningDataModule):
    """Train/validation split of one scan's groups (seeded); batches of GroupedScan items."""

    def __init__(self, scan: ScanData, config: DataConfig, batch_size: int,
                 val_fraction: float = 0.05, num_workers: int = 0):
        super().__init__()
        self.scan = scan
        self.config = config
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.num_workers = num_workers
        self.dataset = build_grouped_scan(scan, config)
        n = len(self.dataset)
        n_val = 0 if n < 2 or val_fraction == 0 else max(1, round(val_fraction * n))
        order = np.random.default_rng(config.seed).permutation(n)
        self.val_indices = np.sort(order[:n_val])
        self.train_indices = np.sort(order[n_val:])

    def _loader(self, indices: np.ndarray, shuffle: bool) -> DataLoader:
        subset = torch.utils.data.Subset(self.dataset, indices.tolist())
        generator = torch.Generator().manual_seed(self.config.seed)
        return DataLoader(subset, batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, generator=generator,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_indices, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_indices, shuffle=False)
