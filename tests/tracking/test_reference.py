"""python -m tracking.reference and compare --reference on real files: a reference record
made from our own tracked run, registered into a real sqlite store and read back (MLflow and
TensorBoard event files); compare across a torch run and a registered reference; debug-dump
folders of ours and of the TensorFlow reference's documented layout; the import rule."""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptycho_torch import inference
from tests.tracking.conftest import EXPERIMENT, client_for, inference_argv, sqlite_uri
from tracking import compare, reference
from tracking.patch_stats import flat_metrics
from tracking.tf_dump import read_dump_folder

PRODUCER = {"implementation": "tensorflow", "version": {"tensorflow": "2.21.0", "numpy": "2"},
            "commit": "712c23f", "script": "tools/tf_reference_record.py",
            "settings": {"batch_groups": 4, "seed": 45}}


def _record(records: list[dict], **fields) -> dict:
    """A reference record (docs/reference_record.md) around patch-stats records."""
    return {"format": "ptycho-reference-record", "format_version": 1, "producer": PRODUCER,
            "params": {"N": 16, "gridsize": 2, "groups": None, "batch": 3, "epochs": 2,
                       "nphotons": 1e6},
            "scan": None, "records": records, "reconstruction": None, **fields}


def _write(folder: Path, payload, **arrays) -> Path:
    folder.mkdir(parents=True)
    (folder / "reference_record.json").write_text(json.dumps(payload))
    if arrays:
        np.savez(folder / "reconstruction.npz", **arrays)
    return folder


def _register(capsys, folder: Path, uri: str, *extra: str) -> str:
    capsys.readouterr()
    assert reference.cli_main([str(folder), "--tracking-uri", uri, "--experiment-name",
                               EXPERIMENT, *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def _event_accumulator(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0,
                                                               "images": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def torch_records(tracked_pair) -> list[dict]:
    """The shared train run's own patch-stats records (train and val, 2 epochs)."""
    return json.loads((tracked_pair["out"] / "analysis" / "torch_patch_stats.json").read_text())


@pytest.fixture(scope="module")
def registered(tracked_pair, torch_records, tmp_path_factory) -> dict:
    """Two references in the shared store: the torch run's own statistics, and the same
    with every train record's physics_scale times 1.5."""
    folder = tmp_path_factory.mktemp("references")
    scaled = copy.deepcopy(torch_records)
    for record in scaled:
        if record["stage_name"] == "train":
            record["physics_scale"] *= 1.5
    ids = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name, records in (("equal", torch_records), ("scaled", scaled)):
            _write(folder / name, _record(records))
            assert reference.cli_main([str(folder / name), "--tracking-uri",
                                       tracked_pair["uri"], "--experiment-name", EXPERIMENT,
                                       "--run-name", f"tf-{name}"]) == 0
            run = client_for(tracked_pair["uri"]).search_runs(
                [tracked_pair["experiment_id"]], f"attributes.run_name = 'tf-{name}'")
            ids[name] = run[0].info.run_id
    return ids


# -- register: what the run holds ----------------------------------------------------------

def test_registered_record_round_trips_in_mlflow(tracked_pair, torch_records, registered):
    client = client_for(tracked_pair["uri"])
    run = client.get_run(registered["equal"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tf-equal"
    tags = run.data.tags
    assert tags["run_kind"] == "reference" and tags["implementation"] == "tensorflow"
    assert tags["producer.commit"] == "712c23f" == tags["mlflow.source.git.commit"]
    assert tags["producer.version.tensorflow"] == "2.21.0"
    assert tags["producer.script"] == "tools/tf_reference_record.py"
    # environment tags speak of the producer, not of the machine that registered it
    assert tags["device"] == "unknown" and tags["torch_version"] == "n/a"
    assert tags["seed"] == "45"
    train_params = client.get_run(tracked_pair["train_run_id"]).data.params
    params = run.data.params
    # our config names, and the values our own train run logged under them
    for name in ("model.patch_size_px", "data.patch_size_px", "data.gridsize",
                 "training.batch_size", "training.max_epochs"):
        assert params[name] == train_params[name], name
    assert float(params["data.nphotons"]) == 1e6 and "data.n_groups" not in params
    # every patch metric of every record, at the record's step, as the torch run logged it
    expected: dict[str, dict[int, float]] = {}
    for record in torch_records:
        for key, value in flat_metrics(record).items():
            expected.setdefault(key, {})[record["step"]] = value
    assert {k for k in run.data.metrics if k.startswith("patch/")} == set(expected)
    for key in ("patch/train/physics_scale", "patch/val/object_amplitude/var_zero_mean",
                "patch/train/input_raw/running_max"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert history == pytest.approx(expected[key]), key
        torch_history = {m.step: m.value for m in client.get_metric_history(
            tracked_pair["train_run_id"], key)}
        assert history == pytest.approx(torch_history), key
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "reference_record.json" in top
    assert "reconstruction.png" not in top  # the record names no reconstruction
    path = client.download_artifacts(run.info.run_id, "analysis/torch_patch_stats.json",
                                     str(tracked_pair["root"] / "dl"))
    assert json.loads(Path(path).read_text()) == torch_records


def test_registered_record_in_tensorboard(tracked_pair, torch_records, registered):
    run = client_for(tracked_pair["uri"]).get_run(registered["equal"])
    folder = f"tf-equal-{registered['equal'][:8]}"  # one folder per run: name and id
    logdir = tracked_pair["root"] / "mlruns" / "tensorboard" / EXPERIMENT / folder
    assert run.data.tags["tensorboard_logdir"] == str(logdir)
    events = _event_accumulator(logdir)
    train = [r for r in torch_records if r["stage_name"] == "train"]
    scalars = {e.step: e.value for e in events.Scalars("patch/train/var_zero_mean")}
    assert scalars == pytest.approx({r["step"]: r["var_zero_mean"] for r in train}, rel=1e-6)
    histograms = events.Histograms("patch/train/object_amplitude/var_zero_mean_per_patch")
    first = train[0]["stages"]["object_amplitude"]["per_patch"]["var_zero_mean"]
    assert histograms[0].step == train[0]["step"]
    assert histograms[0].histogram_value.num == len(first)
    assert histograms[0].histogram_value.sum == pytest.approx(sum(first), rel=1e-6)


def test_bare_list_from_our_run_registers_with_unknown_producer(tracked_pair, tmp_path,
                                                                 capsys):
    """Our torch_patch_stats.json, as it is, is a reference record without producer."""
    folder = tmp_path / "bare"
    folder.mkdir()
    source = tracked_pair["out"] / "analysis" / "torch_patch_stats.json"
    (folder / "reference_record.json").write_bytes(source.read_bytes())
    uri = tracked_pair["uri"]
    run_id = _register(capsys, folder, uri)
    run = client_for(uri).get_run(run_id)
    assert run.data.tags["implementation"] == "unknown"
    assert run.data.params == {}
    assert run.data.metrics["patch/train/physics_scale"] == pytest.approx(125.0)


# -- compare: a torch run beside a registered reference --------------------------------------

def test_compare_torch_run_and_equal_reference_pass(tracked_pair, registered, tmp_path):
    out = tmp_path / "cmp"
    assert compare.cli_main([tracked_pair["train_run_id"], registered["equal"], "--tracking-uri",
                             tracked_pair["uri"], "--output-dir", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    rows = {row["statistic"]: row for row in report["rows"]}
    assert {"train/physics_scale", "train/mean_input_scale", "val/var_zero_mean"} <= set(rows)
    assert all(row["max_rel_diff"] == 0.0 for row in rows.values())


def test_compare_torch_run_and_scaled_reference_fail(tracked_pair, registered, tmp_path):
    out = tmp_path / "cmp"
    assert compare.cli_main([tracked_pair["train_run_id"], registered["scaled"],
                             "--tracking-uri", tracked_pair["uri"], "--output-dir",
                             str(out)]) == 1
    rows = {row["statistic"]: row for row in json.loads((out / "compare.json").read_text())
            ["rows"]}
    physics = rows["train/physics_scale"]
    assert physics["verdict"] == "FAIL" and physics["parity_key"]
    assert physics["max_rel_diff"] == pytest.approx(0.5)
    failed = {key for key, row in rows.items() if row["verdict"] == "FAIL"}
    assert failed == {"train/physics_scale"}


# -- reconstruction: scored with our metrics against the scan's objectGuess ------------------

def test_reconstruction_scored_drawn_and_logged(tracked_pair, small_files, torch_records,
                                                tmp_path, capsys):
    scan = small_files["test"]
    with np.load(scan) as data:
        truth = data["objectGuess"]
    sha = hashlib.sha256(scan.read_bytes()).hexdigest()
    uri = tracked_pair["uri"]
    rng = np.random.default_rng(0)
    close = truth * (1 + 1e-3 * rng.standard_normal(truth.shape))
    noisy = truth * (1 + 0.5 * rng.standard_normal(truth.shape))
    scores = {}
    for name, obj in (("exact", close), ("noisy", noisy)):
        folder = _write(tmp_path / name, _record(
            torch_records, scan={"file": scan.name, "sha256": sha},
            reconstruction={"file": "reconstruction.npz", "groups_stitched": 7}),
            object=obj.astype(np.complex64), weight=np.ones(truth.shape, np.float32))
        run_id = _register(capsys, folder, uri, "--scan", str(scan), "--run-name", name)
        scores[name] = client_for(uri).get_run(run_id).data.metrics
    exact, noisy_scores = scores["exact"], scores["noisy"]
    assert exact["amp_ssim"] > 0.99 and exact["phase_pearson"] > 0.99
    assert noisy_scores["amp_ssim"] < exact["amp_ssim"] - 0.1
    assert {"amp_psnr", "phase_frc50", "phase_rms_rad"} <= set(exact)
    client = client_for(uri)
    run = client.get_run(run_id)
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"reconstruction.png", "reconstruction.npz", "metrics.json",
            "reference_record.json"} <= top
    metrics_json = json.loads(Path(client.download_artifacts(
        run_id, "metrics.json", str(tmp_path / "dl"))).read_text())
    assert metrics_json == pytest.approx({k: noisy_scores[k] for k in metrics_json})
    assert set(metrics_json) == {k for k in noisy_scores if not k.startswith("patch/")}
    assert run.data.tags["dataset.inference.sha256"] == sha
    images = _event_accumulator(run.data.tags["tensorboard_logdir"]).Tags()["images"]
    assert "images/reconstruction" in images


# -- bad input: one line, exit 2, no run -----------------------------------------------------

def _bad_cases(tmp_path: Path, records: list[dict], scan: Path) -> dict[str, tuple]:
    no_per_patch = copy.deepcopy(records)
    del no_per_patch[0]["stages"]["input_raw"]["per_patch"]
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "reference_record.json").write_text("{not json")
    with np.load(scan) as data:
        shape = data["objectGuess"].shape
    recon = {"object": np.ones(shape, np.complex64), "weight": np.ones(shape, np.float32)}
    # foreign records: a named file outside the folder, by '..', absolute path or link
    np.savez(tmp_path / "outside.npz", **recon)
    linked = _write(tmp_path / "link", _record(records, reconstruction={"file": "r.npz"}))
    (linked / "r.npz").symlink_to(tmp_path / "outside.npz")
    forged = _write(tmp_path / "forged", _record(
        records, reconstruction={"file": "reconstruction.npz"}), **recon)
    with np.load(forged / "reconstruction.npz") as data:
        arrays = {key: data[key] for key in data.files}
    with zipfile.ZipFile(forged / "reconstruction.npz", "w") as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, value)
            if key == "object":  # the header claims 10^12 rows
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, {
                    "descr": "<c8", "fortran_order": False, "shape": (10**12, shape[1])})
                buffer.write(value.tobytes())
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return {
        "file climbs out": (_write(tmp_path / "up", _record(
            records, reconstruction={"file": "../outside.npz"})), (), "not a plain name"),
        "absolute file": (_write(tmp_path / "abs", _record(
            records, reconstruction={"file": str(tmp_path / "outside.npz")})), (),
            "not a plain name"),
        "file links out": (linked, (), "a link leading out"),
        "forged npz header": (forged, (), "declares shape (1000000000000,"),
        "missing folder": (tmp_path / "nope", (), "not a folder"),
        "bad json": (tmp_path / "badjson", (), "not a readable JSON file"),
        "wrong format": (_write(tmp_path / "fmt", {**_record(records), "format": "other"}), (),
                         "format 'other'"),
        "no per_patch": (_write(tmp_path / "pp", _record(no_per_patch)), (),
                         "lacks per_patch.var_zero_mean"),
        "missing npz": (_write(tmp_path / "npz", _record(
            records, reconstruction={"file": "reconstruction.npz"})), (), "not in"),
        "other scan": (_write(tmp_path / "sha", _record(
            records, scan={"file": "x.npz", "sha256": "0" * 64},
            reconstruction={"file": "reconstruction.npz"}), **recon), ("--scan", str(scan)),
            "not the scan the record was made from"),
    }


def test_bad_input_is_one_line_exit_2_and_no_run(small_files, torch_records, tmp_path, capsys):
    store = tmp_path / "store"
    uri = sqlite_uri(store)
    for name, (folder, extra, message) in _bad_cases(tmp_path, torch_records,
                                                     small_files["test"]).items():
        capsys.readouterr()
        assert reference.cli_main([str(folder), "--tracking-uri", uri, *extra]) == 2, name
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("python -m tracking.reference: error:")
        assert message in lines[0], (name, lines[0])
        assert captured.out == "" and not store.exists(), name  # no store, so no run


# -- debug dumps: ours and the TF reference's ------------------------------------------------

@pytest.fixture(scope="module")
def dumps(tracked_pair, tmp_path_factory) -> dict:
    """Our inference --debug-dump on the shared model (tracked: forward_parity_debug/), and
    a TF-format dump folder carrying the same numbers under the reference's keys."""
    folder = tmp_path_factory.mktemp("dumps")
    ours = folder / "torch_dump"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert inference.cli_main(inference_argv(
            tracked_pair["out"], tracked_pair["data"], folder / "inf", tracked_pair["uri"],
            "--debug-dump", str(ours), "--run-name", "inf-dump")) == 0
    run = client_for(tracked_pair["uri"]).search_runs(
        [tracked_pair["experiment_id"]], "attributes.run_name = 'inf-dump'")[0]
    stats = json.loads((ours / "stats.json").read_text())
    offsets = json.loads((ours / "offsets.json").read_text())
    canvas = json.loads((ours / "canvas.json").read_text())
    origin = np.array([40.0, 30.0])  # the reference keeps raw (uncentred) offsets
    tf_files = {
        "stats.json": {"patch_amplitude": {k: stats["patch_amplitude"][k] for k in
                                           ("mean", "std", "min", "max", "var_zero_mean")},
                       # the reference counts uncovered (zero) canvas pixels too
                       "canvas_amplitude": {"mean": stats["canvas_amplitude"]["mean"] / 3,
                                            "std": 0.5, "min": 0.0,
                                            "max": stats["canvas_amplitude"]["max"]}},
        "offsets.json": {"count": offsets["count"],
                         "first_offsets_px": [{"dx": x + origin[0], "dy": y + origin[1]}
                                              for x, y in offsets["first_offsets_xy"]],
                         "mean_dx": origin[0], "mean_dy": origin[1],
                         "std_dx": offsets["dx_std"], "std_dy": offsets["dy_std"],
                         "centered_std_dx": offsets["dx_std"],
                         "centered_std_dy": offsets["dy_std"]},
        "canvas.json": {"patch_size": canvas["patch_size"], "canvas_size": 99,
                        "num_patch_slots": canvas["n_patch_slots"],
                        "max_abs_dx": canvas["max_abs_dx"] + origin[0],
                        "max_abs_dy": canvas["max_abs_dy"] + origin[1]},
    }
    return {"ours": ours, "tf_files": tf_files, "run_id": run.info.run_id, "root": folder}


def _tf_dump(folder: Path, files: dict) -> Path:
    folder.mkdir()
    for name, payload in files.items():
        (folder / name).write_text(json.dumps(payload))
    return folder


def test_tf_dump_keys_map_onto_ours(dumps, tmp_path):
    tf_kind, tf_stats = read_dump_folder(_tf_dump(tmp_path / "tf", dumps["tf_files"]))
    our_kind, our_stats = read_dump_folder(dumps["ours"])
    assert (tf_kind, our_kind) == ("tensorflow", "ptycho_torch")
    assert set(tf_stats) == {f"dump/patch_amplitude/{k}" for k in
                             ("mean", "std", "min", "max", "var_zero_mean")} | {
        "dump/canvas_amplitude/max", "dump/offsets/dx_std", "dump/offsets/dy_std",
        "dump/canvas/patch_size"}
    assert set(tf_stats) < set(our_stats)
    assert tf_stats == pytest.approx({key: our_stats[key] for key in tf_stats})
    assert tf_stats["dump/canvas/patch_size"] == 16.0


def test_compare_tf_dump_with_our_dump_folder_and_run(tracked_pair, dumps, tmp_path):
    tf_dir = _tf_dump(tmp_path / "tf_dump", dumps["tf_files"])
    out = tmp_path / "cmp"
    assert compare.cli_main(["--reference", str(tf_dir), "--reference", str(dumps["ours"]),
                             "--keys", "^dump/", "--output-dir", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["columns"] == ["tensorflow dump (tf_dump)", "ptycho_torch dump (torch_dump)"]
    assert len(report["rows"]) == 9  # the mapped keys both define alike
    # the inference run logged the same dump under forward_parity_debug/
    assert compare.cli_main([dumps["run_id"], "--reference", str(tf_dir), "--tracking-uri",
                             tracked_pair["uri"], "--keys", "^dump/", "--output-dir",
                             str(out)]) == 0
    assert len(json.loads((out / "compare.json").read_text())["rows"]) == 9
    # beyond tolerance: the reference's var_zero_mean times 1.5
    files = copy.deepcopy(dumps["tf_files"])
    files["stats.json"]["patch_amplitude"]["var_zero_mean"] *= 1.5
    scaled = _tf_dump(tmp_path / "tf_scaled", files)
    assert compare.cli_main(["--reference", str(scaled), "--reference", str(dumps["ours"]),
                             "--output-dir", str(out)]) == 1
    rows = {row["statistic"]: row for row in json.loads((out / "compare.json").read_text())
            ["rows"]}
    assert rows["dump/patch_amplitude/var_zero_mean"]["verdict"] == "FAIL"
    assert rows["dump/patch_amplitude/var_zero_mean"]["parity_key"]
    assert {k for k, r in rows.items() if r["verdict"] == "FAIL"} == {
        "dump/patch_amplitude/var_zero_mean"}


def test_malformed_tf_dump_is_one_line_exit_2(dumps, tmp_path, capsys):
    files = copy.deepcopy(dumps["tf_files"])
    del files["stats.json"]["patch_amplitude"]["var_zero_mean"]
    broken = _tf_dump(tmp_path / "broken", files)
    capsys.readouterr()
    assert compare.cli_main(["--reference", str(broken), "--reference", str(dumps["ours"]),
                             "--output-dir", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "patch_amplitude.var_zero_mean" in err[0]


def test_dump_file_linking_out_of_its_folder_is_refused(dumps, tmp_path, capsys):
    """A received dump folder whose stats.json is a link elsewhere: one line, exit 2."""
    real = _tf_dump(tmp_path / "real", dumps["tf_files"])
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in ("offsets.json", "canvas.json"):
        if (real / name).is_file():
            (linked / name).write_bytes((real / name).read_bytes())
    (linked / "stats.json").symlink_to(real / "stats.json")
    capsys.readouterr()
    assert compare.cli_main(["--reference", str(linked), "--reference", str(dumps["ours"]),
                             "--output-dir", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stats.json" in err[0] and "link leading out" in err[0], err
    assert not (tmp_path / "cmp").exists()


# -- the import rule ---------------------------------------------------------------------------

def test_tracking_imports_ptycho_torch_only_inside_reference_cli_main():
    """No module-level import of ptycho_torch in tracking/; the lazy ones sit in
    tracking.reference.cli_main alone (docs/library.md)."""
    lazy = []
    for path in sorted(Path(reference.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            assert not _imports_ptycho_torch(node), f"{path.name}: module-level import"
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef):
                lazy += [(path.name, func.name) for node in ast.walk(func)
                         if _imports_ptycho_torch(node)]
    assert lazy and set(lazy) == {("reference.py", "cli_main")}


def _imports_ptycho_torch(node) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "ptycho_torch" for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "ptycho_torch"
    if isinstance(node, ast.If | ast.Try):
        return any(_imports_ptycho_torch(child) for child in ast.walk(node) if child is not node)
    return False


# -- like with like: another implementation's groups ----------------------------------------

def test_inference_on_given_group_indices(tracked_pair, tmp_path, capsys):
    """--group-indices reconstructs exactly those groups: the recorded inputs are the
    patterns named, in that order; a malformed array is one line and exit 2."""
    indices = np.array([[9, 8, 7, 6], [0, 1, 2, 3], [5, 5, 4, 4]], dtype=np.int64)
    path = tmp_path / "groups.npy"
    np.save(path, indices)
    out = tmp_path / "inf"
    assert inference.cli_main(inference_argv(tracked_pair["out"], tracked_pair["data"], out,
                                             tracked_pair["uri"], "--group-indices",
                                             str(path))) == 0
    records = json.loads((out / "analysis" / "torch_patch_stats.json").read_text())
    raw = records[0]["stages"]["input_raw"]
    with np.load(tracked_pair["data"]) as npz:
        expected = npz["diffraction"][indices].reshape(-1, 16 * 16).astype(np.float64)
    assert raw["n_patches"] == indices.size
    assert raw["per_patch"]["mean"] == pytest.approx(expected.mean(axis=1).tolist(), rel=1e-6)

    forged = io.BytesIO()  # a header claiming 10^12 groups over 32 bytes of data
    np.lib.format.write_array_header_1_0(forged, {"descr": "<i8", "fortran_order": False,
                                                  "shape": (10**12, 4)})
    forged.write(np.arange(4, dtype="<i8").tobytes())
    (tmp_path / "forged.npy").write_bytes(forged.getvalue())
    for bad, message in ((np.zeros((2, 3), np.int64), "integer (groups, 4) expected"),
                         (tmp_path / "forged.npy", "refused before allocating"),
                         (np.array([[0, 1, 2, 99]]), "outside the scan's 10 patterns"),
                         (np.zeros((2, 4)), "integer (groups, 4) expected")):
        if isinstance(bad, Path):
            path.write_bytes(bad.read_bytes())
        else:
            np.save(path, bad)
        capsys.readouterr()
        target = tmp_path / "bad"
        assert inference.cli_main(inference_argv(tracked_pair["out"], tracked_pair["data"],
                                                 target, tracked_pair["uri"],
                                                 "--group-indices", str(path))) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not target.exists()
