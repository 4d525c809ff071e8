"""The bad-input matrix: every malformed input the CLIs must refuse cleanly, in one list.

Each :class:`Case` builds its input in a folder and says which CLIs it goes through, what
the one stderr line must contain, and the exit code. ``tests/torch/test_bad_input_matrix.py``
runs the cases in-process; this module's ``main()`` runs them as real subprocesses
(``python -m ptycho_torch.train`` / ``python -m ptycho_torch.inference``) and writes the
evidence table::

    python -m tests.torch.bad_inputs --out docs/evidence/bad_inputs.md

The rule for every refused input (docs/data_contract.md): exactly one line on stderr
naming the file, the key where there is one, and what was expected; exit code 2; no
traceback; nothing written (the output folder absent, or still empty if it existed).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.conftest import write_random_stub

PATCH = 16  # N of every stub and of the reference model
POINTS = 10  # scan points of every stub
GRIDSIZE = 2  # the reference model's gridsize: 4 channels, so 3 points are too few
MARKER = "UNPICKLED_MARKER"  # written only if someone unpickles the trap

TRAIN = "train"
INFERENCE = "inference"
BOTH = (TRAIN, INFERENCE)
PROGS = {TRAIN: "python -m ptycho_torch.train", INFERENCE: "python -m ptycho_torch.inference"}


@dataclass(frozen=True)
class Case:
    """One input. ``build(folder)`` writes it and returns its path: the scan file given to
    ``--train_data_file`` / ``--test_data``, or, with ``via_test_file``, train's
    ``--test_data_file`` (then a valid training scan is written beside it). With ``model``
    set the scan is valid and ``model(folder, real_model_dir)`` returns the bad
    ``--model_path`` (inference only). ``gap`` marks a known failure of the rule: what still
    needs fixing, and where."""

    name: str
    summary: str
    build: Callable[[Path], Path]
    expect: tuple[str, ...]  # substrings of the stderr line (key, expectation)
    clis: tuple[str, ...] = BOTH
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per-CLI flags
    exit_code: int = 2
    model: Callable[[Path, Path], Path] | None = None
    # success cases: check(data_file, output_dir, cli) after the CLI ran
    check: Callable[[Path, Path, str], None] | None = None
    via_test_file: bool = False
    gap: str | None = None


# -- builders -----------------------------------------------------------------------------

def stub(name: str, n: int = POINTS, **overrides) -> Callable[[Path], Path]:
    """A builder writing the contract stub with some keys replaced (None drops a key)."""

    def build(folder: Path) -> Path:
        path = folder / f"{name}.npz"
        write_random_stub(path, n=n, big_n=PATCH, **overrides)
        return path

    return build


def with_value(key: str, index: tuple, value) -> Callable[[Path], Path]:
    """The stub with one element of ``key`` set to ``value`` (a NaN, an Inf, a -1)."""

    def build(folder: Path) -> Path:
        path = folder / f"{key}_{value}.npz".replace("-", "minus")
        write_random_stub(path, n=POINTS, big_n=PATCH)
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays[key] = arrays[key].copy()
        arrays[key][index] = value
        np.savez(path, **arrays)
        return path

    return build


def diffraction(shape, dtype=np.float32, fill=None) -> np.ndarray:
    values = np.random.default_rng(7).random(shape) if fill is None else np.full(shape, fill)
    return values.astype(dtype)


def uint16_counts(folder: Path) -> Path:
    """Amplitudes stored as uint16: 300 squares to 90000, which uint16 would wrap to 24464."""
    path = folder / "uint16_counts.npz"
    write_random_stub(path, n=POINTS, big_n=PATCH, _metadata=None,
                      diffraction=np.full((POINTS, PATCH, PATCH), 300, np.uint16))
    return path


def check_uint16(path: Path, out: Path, cli: str) -> None:
    """Squares stay right: the loaded amplitudes square to 90000, and (training, no
    _metadata) the physics scale's nphotons is the mean counts 16 * 16 * 300**2."""
    from ptycho_torch.data import load_scan, mean_counts_per_pattern

    scan = load_scan(path)
    assert scan.diffraction.dtype == np.float32
    assert np.all(scan.diffraction.astype(np.float64) ** 2 == 300**2)
    assert mean_counts_per_pattern(scan.diffraction) == PATCH * PATCH * 300**2
    if cli == TRAIN:
        config = json.loads((out / "config.json").read_text())
        assert config["model"]["nphotons"] == PATCH * PATCH * 300**2, config["model"]


def legacy_layout(folder: Path) -> Path:
    path = folder / "legacy_layout.npz"
    stack = diffraction((POINTS, PATCH, PATCH))
    write_random_stub(path, n=POINTS, big_n=PATCH, diffraction=np.transpose(stack, (1, 2, 0)))
    return path


def check_legacy(path: Path, out: Path, cli: str) -> None:
    from ptycho_torch.data import load_scan

    scan = load_scan(path)
    with np.load(path) as npz:
        np.testing.assert_array_equal(scan.diffraction, np.transpose(npz["diffraction"],
                                                                     (2, 0, 1)))


def empty_file(folder: Path) -> Path:
    path = folder / "empty.npz"
    path.write_bytes(b"")
    return path


def truncated(folder: Path) -> Path:
    path = stub("truncated")(folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def text_file(folder: Path) -> Path:
    path = folder / "notes.npz"
    path.write_text("x, y, intensity\n0.1, 0.2, 310\n")
    return path


def single_npy(folder: Path) -> Path:
    """A bare .npy array (np.save) under an .npz name: no keys at all."""
    path = folder / "single_array.npz"
    buffer = io.BytesIO()
    np.save(buffer, diffraction((POINTS, PATCH, PATCH)))
    path.write_bytes(buffer.getvalue())
    return path


class UnpickleTrap:
    """Unpickling this object creates the file ``MARKER`` beside the NPZ (through the
    builtin ``open``, so it fires in any process): a loader that unpickles is caught."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(folder: Path) -> Path:
    path = folder / "pickled.npz"
    trap = np.empty(1, dtype=object)
    trap[0] = UnpickleTrap(folder / MARKER)
    write_random_stub(path, n=POINTS, big_n=PATCH, _metadata=trap)
    return path


def forged_shape(folder: Path) -> Path:
    """A valid stub whose 'diffraction' header claims 10^12 patterns (with 10 KiB of data
    behind it): a loader that trusts the header tries to allocate 1 PB."""
    import zipfile

    path = stub("forged_shape")(folder)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            if key == "diffraction":
                np.lib.format.write_array_header_1_0(buffer, {
                    "descr": "<f4", "fortran_order": False, "shape": (10**12, PATCH, PATCH)})
                buffer.write(value.astype("<f4").tobytes())
            else:
                np.lib.format.write_array(buffer, value, allow_pickle=False)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return path


def forged_zip_size(folder: Path) -> Path:
    """A compressed stub whose zip directory says 'diffraction.npy' expands to 4 GiB from
    a few kilobytes: more than DEFLATE can give (a zip-bomb header)."""
    import struct

    path = folder / "forged_zip_size.npz"
    write_random_stub(folder / "plain.npz", n=POINTS, big_n=PATCH)
    with np.load(folder / "plain.npz", allow_pickle=False) as npz:
        np.savez_compressed(path, **{key: npz[key] for key in npz.files})
    (folder / "plain.npz").unlink()
    data = bytearray(path.read_bytes())
    name = b"diffraction.npy"
    entry = 0
    while (entry := data.find(b"PK\x01\x02", entry + 1)) != -1:
        name_length = struct.unpack_from("<H", data, entry + 28)[0]
        if bytes(data[entry + 46:entry + 46 + name_length]) == name:
            struct.pack_into("<I", data, entry + 24, 0xFFFFFFFE)  # uncompressed size
            break
    path.write_bytes(bytes(data))
    return path


def model_weights_link_out(folder: Path, model_dir: Path) -> Path:
    """A model folder whose model.pt is a link to weights outside it."""
    outside = folder / "elsewhere"
    outside.mkdir()
    shutil.copy(model_dir / "model.pt", outside / "model.pt")
    path = folder / "model_with_link"
    path.mkdir()
    shutil.copy(model_dir / "config.json", path / "config.json")
    (path / "model.pt").symlink_to(outside / "model.pt")
    return path


def a_directory(folder: Path) -> Path:
    path = folder / "scan_folder.npz"
    path.mkdir()
    return path


def absent(folder: Path) -> Path:
    return folder / "no_such_scan.npz"


def model_is_a_file(folder: Path, model_dir: Path) -> Path:
    path = folder / "model.pt"
    shutil.copy(model_dir / "model.pt", path)
    return path


def model_empty_dir(folder: Path, model_dir: Path) -> Path:
    path = folder / "empty_model_dir"
    path.mkdir()
    return path


def model_absent(folder: Path, model_dir: Path) -> Path:
    return folder / "no_such_model_dir"


def raw_pickle(folder: Path) -> Path:
    """A whole file that is a pickle (pickle.dump of the trap) under an .npz name."""
    import pickle

    path = folder / "pickled_dict.npz"
    path.write_bytes(pickle.dumps({"diffraction": UnpickleTrap(folder / MARKER)}))
    return path


def stub_n32(folder: Path) -> Path:
    path = folder / "valid_n32.npz"
    write_random_stub(path, n=POINTS, big_n=32)
    return path


def garbled(name: str) -> Callable[[Path, Path], Path]:
    """A copy of the real model folder with ``name`` (config.json or model.pt) overwritten."""

    def build(folder: Path, model_dir: Path) -> Path:
        path = folder / f"model_with_bad_{name.replace('.', '_')}"
        shutil.copytree(model_dir, path)
        (path / name).write_text("{ this is not what was saved")
        return path

    return build


VALID = stub("valid")
NAN, INF = float("nan"), float("inf")

CASES: list[Case] = [
    *[Case(f"missing_{key}", f"no '{key}' key", stub(f"missing_{key}", **{key: None}),
           (f"'{key}'", "missing"))
      for key in ("diffraction", "probeGuess", "xcoords", "ycoords")],
    Case("diffraction_2d", "diffraction of shape (10, 16)",
         stub("diffraction_2d", diffraction=diffraction((POINTS, PATCH))),
         ("'diffraction'", "(10, 16)", "(n, N, N) expected")),
    Case("diffraction_4d", "diffraction of shape (10, 1, 16, 16)",
         stub("diffraction_4d", diffraction=diffraction((POINTS, 1, PATCH, PATCH))),
         ("'diffraction'", "(10, 1, 16, 16)", "(n, N, N) expected")),
    Case("probe_1d", "probeGuess of shape (16,)",
         stub("probe_1d", probeGuess=np.ones(PATCH, np.complex64)),
         ("'probeGuess'", "(16,)", "square (N, N) expected")),
    Case("more_patterns_than_positions", "12 patterns, 10 positions",
         stub("more_patterns", diffraction=diffraction((POINTS + 2, PATCH, PATCH))),
         ("'diffraction'", "12 patterns but 10 scan positions")),
    Case("x_y_lengths_differ", "10 xcoords, 9 ycoords",
         stub("xy_lengths", ycoords=np.zeros(POINTS - 1)),
         ("'ycoords'", "length 9 != xcoords length 10")),
    Case("nan_in_diffraction", "one NaN pixel", with_value("diffraction", (3, 4, 5), NAN),
         ("'diffraction'", "NaN or Inf")),
    Case("inf_in_diffraction", "one Inf pixel", with_value("diffraction", (3, 4, 5), INF),
         ("'diffraction'", "NaN or Inf")),
    Case("nan_in_probe", "one NaN probe pixel", with_value("probeGuess", (2, 2), NAN),
         ("'probeGuess'", "NaN or Inf")),
    Case("inf_in_probe", "one Inf probe pixel", with_value("probeGuess", (2, 2), INF),
         ("'probeGuess'", "NaN or Inf")),
    Case("nan_in_xcoords", "one NaN position", with_value("xcoords", (4,), NAN),
         ("'xcoords'", "NaN or Inf")),
    Case("inf_in_ycoords", "one Inf position", with_value("ycoords", (4,), INF),
         ("'ycoords'", "NaN or Inf")),
    Case("negative_amplitude", "one pixel -1", with_value("diffraction", (0, 0, 0), -1.0),
         ("'diffraction'", "1 negative value", "(0, 0, 0)", ">= 0 expected")),
    Case("all_zero_diffraction", "every pattern all zero",
         stub("all_zero", diffraction=diffraction((POINTS, PATCH, PATCH), fill=0)),
         ("'diffraction'", "all zero")),
    Case("uint16_counts", "uint16 amplitudes of 300 (300**2 overflows uint16)", uint16_counts,
         (), exit_code=0, check=check_uint16),
    Case("legacy_layout", "diffraction stored (N, N, n) = (16, 16, 10)", legacy_layout,
         ("'diffraction'", "legacy layout"), exit_code=0, check=check_legacy),
    Case("complex_diffraction", "complex64 diffraction",
         stub("complex", diffraction=diffraction((POINTS, PATCH, PATCH), np.complex64)),
         ("'diffraction'", "complex", "real")),
    Case("probe_not_square", "probeGuess (16, 12)",
         stub("probe_16x12", probeGuess=np.ones((PATCH, 12), np.complex64)),
         ("'probeGuess'", "(16, 12)", "square (N, N) expected")),
    Case("probe_not_matching_patterns", "probeGuess 8x8, patterns 16x16",
         stub("probe_8x8", probeGuess=np.ones((8, 8), np.complex64)),
         ("'diffraction'", "(16, 16)", "probeGuess (8, 8)", "same N x N expected")),
    Case("scan_n_differs_from_model", "a valid N = 32 scan, a model trained at N = 16",
         stub_n32, ("32 px", "16 px"), clis=(INFERENCE,)),
    Case("empty_file", "0 bytes", empty_file, ("is empty (0 bytes)", "NPZ archive expected")),
    Case("truncated_npz", "a valid NPZ cut in half", truncated,
         ("damaged or truncated NPZ archive",)),
    Case("text_file", "CSV text named .npz", text_file,
         ("is a text file", "not an NPZ archive")),
    Case("single_npy_array", "np.save output (one array, no keys)", single_npy,
         ("single array", "not an NPZ archive")),
    Case("pickled_object_array", "_metadata holds a pickled object (would write a file)",
         pickled, ("'_metadata'", "pickled", "never unpickled")),
    Case("raw_pickle_file", "a pickle.dumps file (would write a file) named .npz", raw_pickle,
         ("Python pickle", "never unpickled")),
    Case("npz_header_claims_1e12_patterns", "'diffraction' header says (10^12, 16, 16), "
         "10 KiB of data", forged_shape,
         ("'diffraction'", "declares shape (1000000000000, 16, 16)", "refused before allocating")),
    Case("npz_zip_claims_4_gib", "zip directory: 'diffraction.npy' expands to 4 GiB from a "
         "few KiB", forged_zip_size,
         ("'diffraction'", "more than compression can give", "refused")),
    Case("n_images_too_large", "--n_images 50 on 10 points", VALID,
         ("--n_images 50", "10 groups", "at most 10 expected"),
         extra={TRAIN: ("--n_images", "50"), INFERENCE: ("--n_images", "50")}),
    Case("too_few_points_for_gridsize", "3 points at gridsize 2",
         stub("three_points", n=3), ("'xcoords'", "3 scan points", "gridsize 2", "at least 4"),
         extra={TRAIN: ("--gridsize", "2")}),
    Case("data_is_a_directory", "a folder passed as the scan", a_directory,
         ("is a directory", "NPZ file expected")),
    Case("data_does_not_exist", "a path that does not exist", absent, ("does not exist",)),
    Case("test_file_missing_key", "train --test_data_file without 'probeGuess'",
         stub("test_missing_probeGuess", probeGuess=None), ("'probeGuess'", "missing"),
         clis=(TRAIN,), via_test_file=True),
    Case("test_file_n_differs", "train --test_data_file at N = 32, training scan at N = 16",
         stub_n32, ("32 px", "16 px"), clis=(TRAIN,), via_test_file=True),
    Case("test_file_too_few_points", "train --test_data_file with 3 points at gridsize 2",
         stub("test_three_points", n=3), ("'xcoords'", "at least 4"), clis=(TRAIN,),
         extra={TRAIN: ("--gridsize", "2")}, via_test_file=True),
    Case("model_path_is_a_file", "--model_path names model.pt itself", VALID,
         ("--model_path",), clis=(INFERENCE,), model=model_is_a_file),
    Case("model_path_empty_dir", "--model_path names an empty folder", VALID,
         ("--model_path",), clis=(INFERENCE,), model=model_empty_dir),
    Case("model_path_does_not_exist", "--model_path names nothing", VALID,
         ("--model_path",), clis=(INFERENCE,), model=model_absent),
    Case("model_config_corrupt", "--model_path folder whose config.json is garbage", VALID,
         ("config.json",), clis=(INFERENCE,), model=garbled("config.json")),
    Case("model_weights_link_out", "--model_path folder whose model.pt links outside it",
         VALID, ("model.pt", "link leading out", "never followed"), clis=(INFERENCE,),
         model=model_weights_link_out),
    Case("model_weights_corrupt", "--model_path folder whose model.pt is garbage", VALID,
         ("model.pt",), clis=(INFERENCE,), model=garbled("model.pt")),
]


def case_by_name(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


# -- argv ---------------------------------------------------------------------------------

def train_argv(data: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["--train_data_file", str(data), "--output_dir", str(out), "--logger", "none",
            "--quiet", "--max_epochs", "1", *extra]


def inference_argv(model: Path | str, data: Path | str, out: Path | str,
                   *extra: str) -> list[str]:
    return ["--model_path", str(model), "--test_data", str(data), "--output_dir", str(out),
            "--logger", "none", "--quiet", *extra]


def reference_model_argv(data: Path | str, out: Path | str) -> list[str]:
    """The tiny reference model every inference case uses: 1 epoch, gridsize 2, N = 16,
    half the reference width (loads fast)."""
    return train_argv(data, out, "--gridsize", str(GRIDSIZE), "--batch_size", "4",
                      "--n-filters-scale", "1")


def prepare(case: Case, cli: str, data_dir: Path, model_dir: Path, out: Path | str,
            relative_to: Path | None = None) -> tuple[list[str], Path, Path]:
    """Write the case's inputs into data_dir; return (argv, data file, the path the error
    must name). With relative_to, argv paths are relative to it (the report's cwd)."""
    data = case.build(data_dir)
    bad = data
    model = model_dir
    if case.model is not None:
        model = bad = case.model(data_dir, model_dir)
    extra = case.extra.get(cli, ())
    if case.via_test_file:
        extra = (*extra, "--test_data_file", data)
        data = VALID(data_dir)

    def shown(path):
        return os.path.relpath(path, relative_to) if relative_to is not None else str(path)

    extra = tuple(shown(arg) if isinstance(arg, Path) else arg for arg in extra)
    if cli == TRAIN:
        argv = train_argv(shown(data), out, *extra)
    else:
        argv = inference_argv(shown(model), shown(data), out, *extra)
    return argv, data, Path(shown(bad))


def tree(folder: Path) -> set[str]:
    """Every path under ``folder`` (relative), for before/after comparisons."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# -- the evidence report ------------------------------------------------------------------

def _run(cli: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    module = PROGS[cli].split()[-1]
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _verdict(case: Case, cli: str, proc: subprocess.CompletedProcess, bad: str,
             before: set[str], after: set[str], out: Path, marker: Path) -> str:
    problems = []
    if proc.returncode != case.exit_code:
        problems.append(f"exit {proc.returncode}")
    lines = proc.stderr.strip().splitlines()
    if case.exit_code == 2:
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines")
        line = lines[-1] if lines else ""
        if not line.startswith(f"{PROGS[cli]}: error: "):
            problems.append("not a CLI error line")
        if bad not in line:
            problems.append("file not named")
        problems += [f"lacks {s!r}" for s in case.expect if s not in line]
        if "Traceback" in proc.stderr:
            problems.append("traceback")
        if after != before:
            new = sorted(after - before)
            problems.append(f"{len(new)} path(s) written ({', '.join(new[:2])}, ...)")
        if out.exists():
            problems.append("output dir created")
    else:
        problems += [f"lacks {s!r}" for s in case.expect if s not in proc.stderr]
    if marker.exists():
        problems.append("UNPICKLED")
    return "ok" if not problems else "FAIL: " + "; ".join(problems)


def _shown(proc: subprocess.CompletedProcess, keep: int = 6) -> str:
    """The stderr lines, each in code format, one per row of the cell; beyond ``keep``
    lines (tracebacks) the first three and the last two, the rest counted."""
    lines = proc.stderr.strip().splitlines() or ["(nothing)"]
    cells = ["`" + (line.replace("`", "'").replace("|", "\\|") or " ") + "`" for line in lines]
    if len(cells) > keep:
        cells = [*cells[:3], f"*... {len(cells) - 5} more lines ...*", *cells[-2:]]
    return "<br>".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.torch.bad_inputs",
        description="Run the bad-input matrix through both CLIs as subprocesses and write "
                    "a markdown evidence table.")
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--only", nargs="*", default=None, help="case names to run")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.only is None or c.name in args.only]

    rows = []
    failures = gaps = 0
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as tmp:
        work = Path(tmp)
        (work / "ref").mkdir()
        ref_data = VALID(work / "ref")
        proc = _run(TRAIN, reference_model_argv("ref/valid.npz", "ref/model"), work)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        assert ref_data.is_file()
        for case in cases:
            for cli in case.clis:
                run_dir = work / "runs" / f"{case.name}-{cli}"
                (run_dir / "data").mkdir(parents=True)
                argv, data, bad = prepare(case, cli, run_dir / "data", work / "ref" / "model",
                                          "out", relative_to=run_dir)
                before = tree(run_dir) | {f"ref/{p}" for p in tree(work / "ref")}
                started = time.perf_counter()
                proc = _run(cli, argv, run_dir)
                seconds = time.perf_counter() - started
                checked = ""
                if case.exit_code == 0:
                    try:
                        case.check(data, run_dir / "out", cli)
                    except (AssertionError, OSError) as exc:
                        checked = f"FAIL: data check ({exc})"
                    shutil.rmtree(run_dir / "out", ignore_errors=True)
                after = tree(run_dir) | {f"ref/{p}" for p in tree(work / "ref")}
                verdict = _verdict(case, cli, proc, str(bad), before, after, run_dir / "out",
                                   run_dir / "data" / MARKER)
                verdict = checked or verdict
                if case.gap is not None:
                    verdict = (f"known gap ({verdict[len('FAIL: '):]}); to fix: {case.gap}"
                               if verdict != "ok" else "ok (gap fixed: drop its gap mark)")
                failures += verdict.startswith("FAIL")
                gaps += verdict.startswith("known gap")
                rows.append((case, cli, proc, verdict))
                print(f"{case.name:32s} {cli:9s} exit {proc.returncode} {seconds:5.1f} s "
                      f"{verdict}", file=sys.stderr)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Bad-input matrix: what each CLI prints",
        "",
        "Generated by `python -m tests.torch.bad_inputs --out docs/evidence/bad_inputs.md`",
        "(the same cases run in-process by `tests/torch/test_bad_input_matrix.py`).",
        "",
        "Every case ran as a real subprocess, `python -m ptycho_torch.train` or",
        "`python -m ptycho_torch.inference` with `--logger none --quiet`, from a scratch",
        "folder holding `data/` (the inputs, paths shown relative to it) and a tiny reference",
        f"model (1 epoch, gridsize {GRIDSIZE}, N = {PATCH}, {POINTS} points) for inference.",
        "The rule for a refused input: exit 2, exactly one stderr line naming the file, the",
        "key where there is one, and the expectation; no traceback; nothing written (no",
        "output folder, no `mlruns/`). The two success cases (uint16 counts, legacy layout)",
        "exit 0 and print their usual log lines (and the legacy-layout warning); their data",
        "checks ran too (uint16: amplitudes square to 300\\*\\*2 = 90000 and training's",
        "nphotons is 16 x 16 x 90000, no uint16 wrap). *check* is the generator's own verdict",
        "on the rule; *known gap* marks a case that still breaks it, with the fix it needs",
        "(those cases are xfail in the test). Tracebacks are abbreviated to their first three",
        "and last two lines.",
        "",
        f"Run {time.strftime('%Y-%m-%d')}: {len(rows)} runs; {len(rows) - failures - gaps} "
        f"follow the rule, {gaps} are known gaps (fixes named in *check*), {failures} fail "
        "unexpectedly.",
        "",
        "| case | input | CLI | exit | stderr (exactly as printed) | check |",
        "|---|---|---|---|---|---|",
    ]
    for case, cli, proc, verdict in rows:
        lines.append(f"| {case.name} | {case.summary} | {cli} | {proc.returncode} | "
                     f"{_shown(proc)} | {verdict} |")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}: {len(rows)} runs, {gaps} known gaps, {failures} failing",
          file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
