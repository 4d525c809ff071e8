#!/usr/bin/env bash
# tools/gpu_wheels.sh [DEST]: the wheels a bare GPU machine lacks for a tracked run.
#
# The GPU machines this project is checked on have Python 3.12 with torch, lightning,
# torchvision, tensorboard, scikit-image, scipy, matplotlib, h5py, psutil, nvidia-ml-py and
# numpy (and what those need), no MLflow and no package index. This downloads, for CPython
# 3.12 on manylinux x86_64, what a tracked run (MLflow on a sqlite store) and
# `python -m bench.gpu_check` (which runs `pytest -m gpu`) need beyond that:
#
#   mlflow-skinny   MLflow's client, sqlite tracking store and system metrics, without the
#                   server, pandas, pyarrow or scikit-learn: the full `mlflow` package and
#                   its dependencies would carry 106 MiB (measured 2026-12-04), over the
#                   limit, of what a tracked run never imports
#   sqlalchemy, alembic   the sqlite store's engine and schema migrations (skinny leaves them out)
#   pytest, hypothesis    the test runner and what the test modules import
#
# with every dependency, into DEST (default: gpu_wheels/, git-ignored). Dependencies the GPU
# machine already has (packaging, pyyaml, typing-extensions, protobuf, markupsafe, idna:
# through torch, lightning, tensorboard, aiohttp) go to DEST/spare/ instead and are not
# installed: the machine's own copies stay in charge. `python -m bench.gpu_check` checks the
# installed versions first and names any spare wheel to add.
#
# On the GPU machine, from the checkout (README: "On a GPU machine"):
#   python3 -m pip install --no-index --no-deps --target gpu_site gpu_wheels/*.whl
#   PYTHONPATH=.:gpu_site python3 -m bench.gpu_check --out bench/results
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3) runs pip;
# PY_VERSION (default 3.12) selects the interpreter the wheels are for (3.11 to check the
# same set on a 3.11 machine). Prints every wheel, the total, and the total with the
# checkout, which must stay under 64 MiB (exit 1 if not).
set -euo pipefail

DEST=${1:-gpu_wheels}
PY_VERSION=${PY_VERSION:-3.12}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
LIMIT_BYTES=$((64 * 1024 * 1024))

# The versions tested together (the project's venv when this was written).
REQUIREMENTS=(
    mlflow-skinny==3.17.2
    sqlalchemy==2.1.9
    alembic==1.20.1
    pytest==9.2.0
    hypothesis==6.170.27
)
# What the GPU machine's preinstalled packages bring (their dependency closure, normalized
# names); a wheel of one of these is kept aside in spare/.
PRESENT=" absl-py aiohappyeyeballs aiohttp aiosignal attrs contourpy cycler filelock fonttools
 frozenlist fsspec grpcio h5py idna imageio jinja2 kiwisolver lazy-loader lightning
 lightning-utilities markdown markupsafe matplotlib mpmath multidict networkx numpy
 nvidia-ml-py packaging pillow propcache protobuf psutil pyparsing python-dateutil
 pytorch-lightning pyyaml scikit-image scipy setuptools six sympy tensorboard
 tensorboard-data-server tifffile torch torchmetrics torchvision tqdm triton
 typing-extensions werkzeug yarl "
PRESENT=${PRESENT//$'\n'/ }

# DEST is replaced: refuse anything but a folder this script made (wheels and spare/)
if [[ -e $DEST ]] && find "$DEST" -mindepth 1 -maxdepth 1 ! -name '*.whl' ! -name spare |
        grep -q .; then
    echo "tools/gpu_wheels.sh: error: $DEST holds more than wheels; give a new folder" >&2
    exit 2
fi
abi=cp${PY_VERSION/./}
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT

"$PYTHON" -m pip download --disable-pip-version-check --quiet --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp --abi "$abi" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --dest "$download" "${REQUIREMENTS[@]}"

rm -rf "$DEST"
mkdir -p "$DEST/spare"
for wheel in "$download"/*.whl; do
    file=$(basename "$wheel")
    name=$(echo "${file%%-*}" | tr 'A-Z_.' 'a-z--')
    if [[ $PRESENT == *" $name "* ]]; then
        mv "$wheel" "$DEST/spare/"
    else
        mv "$wheel" "$DEST/"
    fi
done

size_of() { find "$@" -maxdepth 1 -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

echo "wheels for CPython $PY_VERSION manylinux x86_64 in $DEST/ (installed on the GPU machine):"
find "$DEST" -maxdepth 1 -name '*.whl' -printf '%s %f\n' | sort -n |
    awk '{printf "  %8.1f KiB  %s\n", $1 / 1024, $2}'
echo "spare, not installed (the GPU machine has them): $(cd "$DEST/spare" && ls | tr '\n' ' ')"
wheels=$(size_of "$DEST")
spare=$(size_of "$DEST/spare")
checkout=0
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # what travels with the checkout: tracked and untracked files git does not ignore
    checkout=$(git ls-files -z --cached --others --exclude-standard |
        xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
fi
total=$((wheels + spare + checkout))
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels, $(mib "$wheels") (+ spare $(mib "$spare"))"
echo "checkout $(mib "$checkout") + $DEST $(mib $((wheels + spare))) = $(mib "$total")" \
     "(limit 64 MiB)"
if ((total >= LIMIT_BYTES)); then
    echo "tools/gpu_wheels.sh: error: checkout and wheels exceed 64 MiB" >&2
    exit 1
fi
