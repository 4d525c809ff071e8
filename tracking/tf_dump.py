"""Debug-dump folders as compare statistics: ours and the TensorFlow reference's.

Both implementations write ``stats.json``, ``offsets.json`` and ``canvas.json`` from their
inference debug dump (ours: ``python -m ptycho_torch.inference --debug-dump DIR``, see
docs/patch_stats.md; the reference: ``scripts/inference/inference.py --debug_dump DIR``),
with different keys. :func:`dump_statistics` maps either onto one set of names,
``dump/<group>/<stat>``, keeping only what both define alike (docs/reference_record.md,
"Debug-dump folders"), so ``tracking.compare`` can put the two side by side. Pure JSON
reading; nothing here imports mlflow or ptycho_torch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tracking.untrusted import UntrustedFileError, confined_path, read_json

logger = logging.getLogger(__name__)

DUMP_FILES = ("stats.json", "offsets.json", "canvas.json")
RUN_DUMP_FOLDER = "forward_parity_debug"  # where inference runs log their dump
PREFIX = "dump"

_PATCH = ("mean", "std", "min", "max", "var_zero_mean")
# statistic -> (file, key path) for each flavour; see docs/reference_record.md for why the
# reference's canvas mean/std/min, raw offset means, counts and canvas size are left out
MAPPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "tensorflow": {
        **{f"patch_amplitude/{k}": ("stats.json", "patch_amplitude", k) for k in _PATCH},
        "canvas_amplitude/max": ("stats.json", "canvas_amplitude", "max"),
        "offsets/dx_std": ("offsets.json", "std_dx"),
        "offsets/dy_std": ("offsets.json", "std_dy"),
        "canvas/patch_size": ("canvas.json", "patch_size"),
    },
    "ptycho_torch": {
        **{f"patch_amplitude/{k}": ("stats.json", "patch_amplitude", k) for k in _PATCH},
        **{f"canvas_amplitude/{k}": ("stats.json", "canvas_amplitude", k)
           for k in ("mean", "std", "min", "max")},
        "offsets/dx_std": ("offsets.json", "dx_std"),
        "offsets/dy_std": ("offsets.json", "dy_std"),
        "canvas/patch_size": ("canvas.json", "patch_size"),
        "canvas/max_abs_dx": ("canvas.json", "max_abs_dx"),
        "canvas/max_abs_dy": ("canvas.json", "max_abs_dy"),
    },
}


class DumpError(ValueError):
    """A debug-dump folder that cannot be read (one line for the user)."""


def is_dump_folder(folder: str | Path) -> bool:
    return (Path(folder) / "stats.json").is_file()


def flavour(files: dict[str, dict]) -> str:
    """"tensorflow" or "ptycho_torch", from keys only the one writer uses."""
    offsets, canvas = files.get("offsets.json", {}), files.get("canvas.json", {})
    if "std_dx" in offsets or "num_patch_slots" in canvas or "first_offsets_px" in offsets:
        return "tensorflow"
    if "dx_std" in offsets or "n_patch_slots" in canvas or "n_patches" in files.get(
            "stats.json", {}).get("patch_amplitude", {}):
        return "ptycho_torch"
    raise DumpError("neither the TensorFlow reference's nor ptycho_torch's debug dump "
                    "(offsets.json/canvas.json keys unknown)")


def dump_statistics(files: dict[str, dict]) -> tuple[str, dict[str, float]]:
    """Parsed dump files {name: JSON object} -> (flavour, {"dump/<group>/<stat>": value}).

    ``stats.json`` is required; statistics of a missing ``offsets.json`` or ``canvas.json``
    are left out. A key missing from a file that is there is an error."""
    if not isinstance(files.get("stats.json"), dict):
        raise DumpError("stats.json missing or not a JSON object")
    kind = flavour(files)
    out = {}
    for name, (file, *path) in MAPPINGS[kind].items():
        if file not in files:
            continue
        value = files[file]
        for key in path:
            if not isinstance(value, dict) or key not in value:
                raise DumpError(f"{file}: no {'.'.join(path)} (a {kind} dump has it)")
            value = value[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DumpError(f"{file}: {'.'.join(path)} is not a number ({value!r})")
        out[f"{PREFIX}/{name}"] = float(value)
    return kind, out


def read_dump_files(folder: str | Path) -> dict[str, dict]:
    """The dump files present in ``folder``, parsed."""
    files = {}
    for name in DUMP_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            files[name] = read_json(confined_path(folder, name, "dump file"))
        except UntrustedFileError as exc:
            raise DumpError(str(exc)) from exc
        except (OSError, ValueError) as exc:
            raise DumpError(f"{path}: not a readable JSON file ({exc})") from exc
        if not isinstance(files[name], dict):
            raise DumpError(f"{path}: a JSON object expected")
    return files


def read_dump_folder(folder: str | Path) -> tuple[str, dict[str, float]]:
    """A debug-dump folder (ours or the reference's) -> (flavour, statistics)."""
    return dump_statistics(read_dump_files(folder))


def run_dump_statistics(client, run_id: str) -> dict[str, float]:
    """The ``dump/...`` statistics of an inference run that logged a debug dump under
    forward_parity_debug/ ({} when it has none, or an unreadable one: then a warning)."""
    try:
        logged = {Path(item.path).name for item in client.list_artifacts(run_id,
                                                                         RUN_DUMP_FOLDER)}
    except Exception:  # noqa: BLE001 - no such folder, or an unreachable artifact store
        return {}
    if "stats.json" not in logged:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name in DUMP_FILES:
            if name in logged:
                local = client.download_artifacts(run_id, f"{RUN_DUMP_FOLDER}/{name}", tmp)
                files[name] = read_json(local)
        try:
            return dump_statistics(files)[1]
        except DumpError as exc:
            logger.warning("run %s: %s/ left out: %s", run_id, RUN_DUMP_FOLDER, exc)
            return {}
