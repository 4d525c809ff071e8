"""tracking.untrusted: confinement, size limits and declared-size checks, exactly; and the
no-pickle rule over the whole code base."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from tracking.untrusted import (
    UntrustedFileError,
    check_npy_file,
    check_npz_members,
    confined_path,
    read_json,
)

ROOT = Path(__file__).resolve().parents[2]


def test_confined_path_takes_names_inside_and_refuses_the_rest(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text("{}")
    assert confined_path(tmp_path, "sub/a.json", "x") == tmp_path / "sub" / "a.json"
    assert confined_path(tmp_path, "absent.json", "x") == tmp_path / "absent.json"
    for name in ("../a.json", "sub/../../a.json", "/etc/hosts", ""):
        with pytest.raises(UntrustedFileError, match="not a plain name"):
            confined_path(tmp_path / "sub", name, "x")
    (tmp_path / "sub" / "out").symlink_to(tmp_path)
    with pytest.raises(UntrustedFileError, match="link leading out"):
        confined_path(tmp_path / "sub", "out/other.json", "x")
    (tmp_path / "sub" / "in").symlink_to(tmp_path / "sub" / "a.json")  # a link inside is fine
    assert confined_path(tmp_path / "sub", "in", "x").read_text() == "{}"


def test_read_json_checks_the_size_first(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('{"a": "' + "x" * 2000 + '"}')
    assert len(read_json(path)["a"]) == 2000
    with pytest.raises(UntrustedFileError, match="more than the"):
        read_json(path, limit_bytes=1000)


def _npy(shape, data: bytes, descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue() + data


def test_npy_declared_size_against_the_file_and_memory(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((4, 5), np.float32))
    check_npy_file(path)  # an honest file passes
    with pytest.raises(UntrustedFileError, match="refused before allocating"):
        check_npy_file(path, memory_bytes=79)  # 80 bytes of data, 79 available
    path.write_bytes(_npy((4, 6), bytes(80)))  # one row more than the file holds
    with pytest.raises(UntrustedFileError, match=r"declares shape \(4, 6\)"):
        check_npy_file(path)


def test_npz_declared_sizes_against_the_archive_and_memory(tmp_path):
    import zipfile

    path = tmp_path / "a.npz"
    np.savez_compressed(path, x=np.zeros((64, 64), np.float32), y=np.ones(3))
    check_npz_members(path)  # zeros compress ~100x: honest, passes
    with pytest.raises(UntrustedFileError, match="key 'y'.*memory"):
        check_npz_members(path, memory_bytes=64 * 64 * 4 + 23)  # 24 bytes of y don't fit
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", _npy((65, 64), bytes(64 * 64 * 4)))
    with pytest.raises(UntrustedFileError, match=r"key 'x'.*declares shape \(65, 64\)"):
        check_npz_members(path)
    (tmp_path / "not_zip.npz").write_text("text")
    check_npz_members(tmp_path / "not_zip.npz")  # numpy's own refusal names what it is


def test_no_pickle_anywhere_in_the_code():
    """Every torch.load says weights_only=True; nothing loads with allow_pickle=True,
    weights_only=False, pickle/cloudpickle/joblib, or MLflow's pickled-module loaders."""
    forbidden = re.compile(r"allow_pickle\s*=\s*True|weights_only\s*=\s*False|pickle\.loads?\("
                           r"|joblib\.load|mlflow\.pytorch\.load_model|mlflow\.pyfunc\.load")
    torch_load = re.compile(r"torch\.load\(([^)]*)\)", re.S)
    checked = 0
    for folder in ("ptycho_torch", "tracking", "bench", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            checked += 1
            assert not forbidden.search(text), f"{path}: {forbidden.search(text).group(0)}"
            for call in torch_load.finditer(text):
                assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"
    assert checked > 40


SERVER_COMMAND = re.compile(r"\b(mlflow (?:ui|server)|tensorboard(?:\.main)? --logdir)\b")


def _code_block_commands(text: str) -> list[str]:
    """The shell commands in a markdown text's code blocks, continuation lines joined."""
    commands, inside, current = [], False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def test_documented_servers_bind_to_localhost():
    """Every mlflow ui / mlflow server / tensorboard the README or docs/ tell users to
    start binds to 127.0.0.1."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = []
    for page in pages:
        for command in _code_block_commands(page.read_text()):
            if SERVER_COMMAND.search(command):
                found.append(command)
                assert "--host 127.0.0.1" in command, f"{page.name}: {command}"
    assert len(found) >= 4, found  # README and docs/tracking.md name at least these
