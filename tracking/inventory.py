"""python -m tracking.inventory DIR: every artifact under DIR with size, sha256 and producer.

Producers come from the provenance.json sidecars that train, inference and the baseline
write into each folder they fill (the command line that made each file). Writes
DIR/analysis/artifact_inventory.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tracking.files import atomic_write_text
from tracking.provenance import PROVENANCE_FILE, sha256_file

INVENTORY_NAME = "artifact_inventory.txt"
PYTEST_LOG = Path("green") / "pytest_patch_stats.log"


def producers(root: Path) -> dict[Path, str]:
    """Map each recorded file (absolute path) to the last command that wrote it."""
    found: dict[Path, str] = {}
    for sidecar in sorted(root.rglob(PROVENANCE_FILE)):
        try:
            entries = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for entry in entries:
            for name in entry.get("files", []):
                found[(sidecar.parent / name).resolve()] = entry.get("command", "?")
    return found


def build_inventory(root: str | Path) -> str:
    root = Path(root)
    made_by = producers(root)
    output = (root / "analysis" / INVENTORY_NAME).resolve()
    rows = []
    total = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.resolve() == output:
            continue
        size = path.stat().st_size
        total += size
        producer = made_by.get(path.resolve())
        if producer is None and path.name == PROVENANCE_FILE:
            producer = "(provenance sidecar)"
        rows.append((str(path.relative_to(root)), size, sha256_file(path),
                     producer or "(unrecorded)"))
    width = max((len(r[0]) for r in rows), default=4)
    lines = [f"# artifact inventory of {root.resolve()}",
             f"# {len(rows)} files, {total} bytes",
             f"# pytest log ({PYTEST_LOG}): "
             + ("present" if (root / PYTEST_LOG).is_file() else "absent"),
             f"{'path':<{width}}  {'bytes':>10}  {'sha256':<64}  produced by"]
    lines += [f"{name:<{width}}  {size:>10}  {digest}  {producer}"
              for name, size, digest, producer in rows]
    return "\n".join(lines) + "\n"


def write_inventory(root: str | Path) -> Path:
    root = Path(root)
    path = root / "analysis" / INVENTORY_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, build_inventory(root))
    return path


def cli_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracking.inventory",
        description="List every artifact under DIR with size, sha256 and the command that "
                    "produced it; writes DIR/analysis/artifact_inventory.txt.")
    parser.add_argument("dir", help="evidence folder (a baseline hub or any output folder)")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    if not root.is_dir():
        print(f"python -m tracking.inventory: error: {root} is not a directory", file=sys.stderr)
        return 2
    path = write_inventory(root)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
