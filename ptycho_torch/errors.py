"""Errors the library raises on bad input: one line each, naming the file and what was
expected. They speak of arguments and files, never of command-line flags: the CLIs
(``ptycho_torch.cli.shared.describe_error``) phrase them for their own flags."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input to the library: a scan, a model folder, a value; the message is one line."""


class DataContractError(InputError):
    """A scan file breaks the data contract (docs/data_contract.md); names file and key."""

    def __init__(self, path: str | Path, key: str | None, expectation: str):
        self.path, self.key, self.expectation = path, key, expectation
        where = f"{path}" if key is None else f"{path}: key '{key}'"
        super().__init__(f"{where}: {expectation}")


class GroupCountError(DataContractError):
    """More groups asked for than the scan has seed points (one group per point)."""

    def __init__(self, path: str | Path, requested: int, available: int):
        self.requested, self.available = requested, available
        super().__init__(path, "xcoords",
                         f"n_groups {requested} exceeds the {available} groups this scan "
                         f"provides (one per scan point); at most {available} expected")


class ModelFolderError(InputError):
    """A model folder that is missing, a file, or lacks model.pt / config.json.

    ``problem``: "missing", "is_file" or "incomplete" (then ``missing_file`` names it)."""

    def __init__(self, path: str | Path, problem: str, missing_file: str | None = None):
        self.path, self.problem, self.missing_file = Path(path), problem, missing_file
        text = {"missing": f"{path} does not exist (a training output folder expected)",
                "is_file": f"{path} is a file; pass the training output folder that holds it",
                "incomplete": f"{path}: holds no {missing_file}; a training output folder "
                              "(model.pt and config.json) expected"}[problem]
        super().__init__(text)


class ModelFileError(InputError):
    """model.pt or config.json present but unreadable (damaged, foreign, pickled)."""


class ScanModelMismatch(InputError):
    """A scan the model cannot take (its patterns are another size)."""
