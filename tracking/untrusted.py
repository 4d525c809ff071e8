"""Files made by someone else are data: confined to their folder, sized before use.

Scans, reference records, debug dumps and model folders reach users from other people and
other machines (docs/security.md). The rules every reader here follows:

- nothing is unpickled (``allow_pickle=False``, ``torch.load(weights_only=True)``);
- a file named inside a folder (a record's reconstruction, a model's weights, a dump's
  JSON) resolves, symbolic links followed, to a place inside that folder: ``../``, an
  absolute path or a link out of the folder is refused;
- a file's size is checked before it is read whole, and an NPZ member's declared shape is
  checked against the bytes the archive can really hold before numpy allocates it: a
  header claiming 10^12 patterns is refused, not attempted.

Errors are :class:`UntrustedFileError` (a ValueError) with one line naming the file; the
readers turn them into their own one-line refusals. Standard library and numpy only.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

MAX_JSON_BYTES = 256 * 2**20  # the largest JSON sidecar read (records hold per-patch lists)
# DEFLATE cannot expand data more than ~1032:1; a zip entry claiming more lies about its size
MAX_DEFLATE_RATIO = 1100


class UntrustedFileError(ValueError):
    """A foreign file refused before use; the message is one line naming the file (and the
    NPZ key, where there is one): ``<path>[: key '<key>']: <reason>``."""

    def __init__(self, path: str | Path, reason: str, key: str | None = None):
        self.path, self.key, self.reason = Path(path), key, reason
        super().__init__(f"{path}: {reason}" if key is None else f"{path}: key '{key}': {reason}")


def confined_path(folder: str | Path, name: str, what: str) -> Path:
    """``folder / name``, refused when ``name`` is absolute, climbs with ``..``, or
    resolves (links followed) outside ``folder``."""
    folder = Path(folder)
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not str(name).strip():
        raise UntrustedFileError(folder, f"{what} {name!r} is not a plain name inside this "
                                 "folder; a path inside it expected (no '..', not absolute)")
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise UntrustedFileError(path, f"{what} is a link leading out of {folder} (to "
                                 f"{path.resolve()}); refused, never followed")
    return path


def available_memory_bytes() -> int:
    """Memory this process can still take: MemAvailable, else physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n_bytes: int) -> str:
    """A byte count in the largest binary unit below it: "256 MiB", "1.001e+04 TiB"."""
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n_bytes >= 2**power:
            return f"{n_bytes / 2**power:.4g} {unit}"
    return f"{n_bytes} bytes"


def check_size(path: str | Path, limit_bytes: int, what: str = "file") -> int:
    """The file's size in bytes, refused above ``limit_bytes``."""
    size = Path(path).stat().st_size
    if size > limit_bytes:
        raise UntrustedFileError(path, f"{what} of {size} bytes, more than the "
                                 f"{_gib(limit_bytes)} ({limit_bytes} bytes) read at most; "
                                 "refused")
    return size


def read_json(path: str | Path, limit_bytes: int = MAX_JSON_BYTES):
    """A JSON file, size-checked first; raises UntrustedFileError or ValueError/OSError."""
    check_size(path, limit_bytes, "JSON file")
    return json.loads(Path(path).read_text())


def check_npz_members(path: str | Path, memory_bytes: int | None = None) -> None:
    """Refuse an NPZ whose arrays cannot be what their headers say, before any is read:
    a member larger than the archive could expand to, an array larger than its member, or
    arrays together larger than the memory available. Raises UntrustedFileError naming
    the key; returns quietly for archives numpy itself will refuse (not a zip, pickles)."""
    path = Path(path)
    memory_bytes = available_memory_bytes() if memory_bytes is None else memory_bytes
    archive_bytes = path.stat().st_size
    total = 0
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        return  # not a zip: np.load's own refusal names what it is
    with archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if info.compress_size > archive_bytes or (
                    info.compress_type == zipfile.ZIP_STORED
                    and info.file_size != info.compress_size) or (
                    info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1) + 4096):
                raise UntrustedFileError(
                    path, f"the archive claims {info.file_size} bytes from "
                    f"{info.compress_size} stored in a {archive_bytes}-byte file, more than "
                    "compression can give; a damaged or forged NPZ, refused", key)
            shape, dtype, header = _npy_header(archive, info)
            if shape is None or dtype.hasobject:
                continue  # numpy refuses these itself, with our message around it
            n_bytes = math.prod(shape) * dtype.itemsize
            if n_bytes > info.file_size - header:
                raise UntrustedFileError(
                    path, f"declares shape {shape} {dtype} ({_gib(n_bytes)}) but holds "
                    f"{info.file_size - header} bytes; a damaged or forged NPZ, refused "
                    "before allocating", key)
            total += n_bytes
            if total > memory_bytes:
                raise UntrustedFileError(
                    path, f"the arrays need {_gib(total)} so far, more than the "
                    f"{_gib(memory_bytes)} of memory available; refused before allocating",
                    key)


def check_npy_file(path: str | Path, memory_bytes: int | None = None) -> None:
    """Refuse a .npy file whose header declares more data than the file holds, or more
    than the memory available, before numpy allocates it. Quiet for files numpy refuses
    itself (no .npy magic, pickled object arrays)."""
    path = Path(path)
    memory_bytes = available_memory_bytes() if memory_bytes is None else memory_bytes
    try:
        with open(path, "rb") as handle:
            shape, dtype, header = _read_header(handle)
    except OSError:
        return
    if shape is None or dtype.hasobject:
        return
    n_bytes = math.prod(shape) * dtype.itemsize
    held = path.stat().st_size - header
    if n_bytes > held or n_bytes > memory_bytes:
        raise UntrustedFileError(path, f"declares shape {shape} {dtype} ({_gib(n_bytes)}) but "
                                 f"holds {held} bytes ({_gib(memory_bytes)} of memory "
                                 "available); refused before allocating")


def _read_header(handle) -> tuple[tuple[int, ...] | None, np.dtype | None, int]:
    """(shape, dtype, header bytes) of the .npy data in ``handle``; Nones when unreadable."""
    try:
        version = np.lib.format.read_magic(handle)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _fortran, dtype = reader(handle)
        return tuple(int(n) for n in shape), dtype, handle.tell()
    except (ValueError, EOFError):
        return None, None, 0


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo
                ) -> tuple[tuple[int, ...] | None, np.dtype | None, int]:
    """(shape, dtype, header bytes) of an .npy member; (None, None, 0) when unreadable."""
    try:
        with archive.open(info) as handle:
            return _read_header(handle)
    except (OSError, zipfile.BadZipFile):
        return None, None, 0
