"""Check a wheel folder from tools/gpu_wheels.sh on the CPU, as the GPU machine will use it.

    PY_VERSION=3.11 tools/gpu_wheels.sh /tmp/wheels311      # the set, for this Python
    .venv/bin/python tools/gpu_wheels_check.py /tmp/wheels311 --work /tmp/gpu-env

Builds a virtual environment that holds only the GPU machine's preinstalled packages (torch,
lightning, torchvision, tensorboard, scikit-image, scipy, matplotlib, h5py, psutil,
nvidia-ml-py, numpy and what they need, linked from the running Python's environment: no
MLflow, no pytest), installs the wheels beside it with the README's line (``pip install
--no-index --no-deps --target``), and runs ``python -m bench.gpu_check --smoke`` there with
``PYTHONPATH=<checkout>:<target>``: tracked runs into sqlite, DDP and pytest included. Exit
code: the check's. The wheels must be built for the running Python (``PY_VERSION``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import subprocess
import sys
import venv
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
GPU_MACHINE = ("torch", "lightning", "torchvision", "tensorboard", "scikit-image", "scipy",
               "matplotlib", "h5py", "psutil", "nvidia-ml-py", "numpy")


def closure(roots: tuple[str, ...]) -> dict[str, md.Distribution]:
    """The installed distributions ``roots`` need, by normalized name (extras followed)."""
    found: dict[str, md.Distribution] = {}
    stack = [(name, ()) for name in roots]
    while stack:
        name, extras = stack.pop()
        key = canonicalize_name(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if key in found and not extras:
            continue
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            envs = [{"extra": extra} for extra in (extras or ("",))]
            if requirement.marker is None or any(requirement.marker.evaluate(env)
                                                 for env in envs):
                stack.append((requirement.name, tuple(requirement.extras)))
    return found


def link_packages(dists: dict[str, md.Distribution], site: Path) -> int:
    """Symlink each distribution's top-level files and folders into ``site``."""
    entries = set()
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        for file in dist.files or []:
            top = Path(file).parts[0]
            if top not in ("..", "__pycache__"):
                entries.add((base, top))
    for base, top in sorted(entries):
        if not (site / top).exists():
            (site / top).symlink_to(base / top)
    return len(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gpu_wheels_check.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", help="folder of wheels (tools/gpu_wheels.sh) for this Python")
    parser.add_argument("--work", required=True,
                        help="new folder for the environment, the installed wheels and the "
                             "check's output")
    args = parser.parse_args(argv)
    wheels = sorted(Path(args.wheels).glob("*.whl"))
    work = Path(args.work)
    if not wheels:
        print(f"tools/gpu_wheels_check.py: error: no wheels in {args.wheels}", file=sys.stderr)
        return 2
    if work.exists():
        print(f"tools/gpu_wheels_check.py: error: --work {work} exists", file=sys.stderr)
        return 2
    venv.create(work / "env", with_pip=False)
    python = work / "env" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dists = closure(GPU_MACHINE)
    if {"mlflow", "mlflow-skinny", "pytest"} & set(dists):
        print("tools/gpu_wheels_check.py: error: the GPU packages here pull in MLflow or "
              "pytest; the check would prove nothing", file=sys.stderr)
        return 2
    n_links = link_packages(dists, site)
    print(f"environment {work / 'env'}: {len(dists)} distributions of the GPU machine "
          f"({n_links} links)", flush=True)
    target = work / "gpu_site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                    "--no-deps", "--target", str(target), *map(str, wheels)], check=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{target}"}
    command = [str(python), "-m", "bench.gpu_check", "--smoke", "--out", str(work / "out"),
               "--logs", str(work / "out" / "logs")]
    print("$ PYTHONPATH=" + env["PYTHONPATH"] + " " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
