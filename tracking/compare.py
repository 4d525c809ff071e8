"""python -m tracking.compare: patch statistics of runs side by side, with a parity verdict.

Each run's statistics come from its ``analysis/torch_patch_stats.json`` artifact (mean over
its instrumented batches); a ``--reference`` (a record JSON, or a folder with a record
and/or a debug dump, ours or the TF reference's) becomes the first column(s). The first
column is the baseline: every other value gets its relative difference to it, and a row
passes when all are within ``--tolerance``. Below the table: the params and tags (device,
versions, numerics, dataset digests) that differ between the runs; beside compare.md a
picture, compare.png (parity keys per column, per-patch var_zero_mean distributions).
Exit 0 when every row passes, 1 when any fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from tracking.redaction import redact
from tracking.untrusted import read_json

logger = logging.getLogger("tracking.compare")  # not "__main__" under python -m

RECORD_KEYS = ("mean_input_scale", "physics_scale", "object_gain", "global_mean", "global_std",
               "var_zero_mean")
STAGE_KEYS = ("global_mean", "global_std", "var_zero_mean", "min", "max")
PARITY_KEYS = ("mean_input_scale", "physics_scale", "var_zero_mean")


class CompareError(ValueError):
    """Bad input to compare (unknown run, missing stats); exit code 2."""


def summarize_records(records: list[dict]) -> dict[str, float]:
    """Patch-stats records -> {"<stage_name>/<key>" or "<stage_name>/<stage>/<stat>": mean
    over the records of that stage name}."""
    values: dict[str, list[float]] = defaultdict(list)
    for record in records:
        name = record["stage_name"]
        for key in RECORD_KEYS:
            if key in record:
                values[f"{name}/{key}"].append(float(record[key]))
        for stage, stats in record.get("stages", {}).items():
            for key in STAGE_KEYS:
                if key in stats:
                    values[f"{name}/{stage}/{key}"].append(float(stats[key]))
    return {key: sum(v) / len(v) for key, v in values.items()}


def relative_difference(value: float, reference: float) -> float:
    if math.isclose(value, reference, rel_tol=0.0, abs_tol=1e-30):
        return 0.0
    return abs(value - reference) / max(abs(reference), 1e-30)


def compare(columns: dict[str, dict[str, float]], tolerance: float,
            pattern: str | None = None) -> list[dict]:
    """Rows for every statistic present in all columns (first column = baseline)."""
    names = list(columns)
    common = set.intersection(*(set(c) for c in columns.values()))
    if pattern:
        common = {key for key in common if re.search(pattern, key)}
    rows = []
    for key in sorted(common):
        baseline = columns[names[0]][key]
        diffs = [relative_difference(columns[n][key], baseline) for n in names[1:]]
        worst = max(diffs) if diffs else 0.0
        rows.append({"statistic": key, "values": {n: columns[n][key] for n in names},
                     "max_rel_diff": worst, "parity_key": key.rsplit("/", 1)[-1] in PARITY_KEYS,
                     "verdict": "PASS" if worst <= tolerance else "FAIL"})
    return rows


def to_markdown(rows: list[dict], names: list[str], tolerance: float) -> str:
    header = "| statistic | " + " | ".join(names) + " | max rel diff | verdict |"
    lines = [f"Tolerance: {tolerance:.0%} relative to `{names[0]}`.", "", header,
             "|" + "---|" * (len(names) + 3)]
    for row in rows:
        key = f"**{row['statistic']}**" if row["parity_key"] else row["statistic"]
        cells = " | ".join(f"{row['values'][n]:.6g}" for n in names)
        lines.append(f"| {key} | {cells} | {row['max_rel_diff']:.2%} | {row['verdict']} |")
    failed = sum(row["verdict"] == "FAIL" for row in rows)
    parity = [row for row in rows if row["parity_key"]]
    parity_failed = sum(row["verdict"] == "FAIL" for row in parity)
    lines += ["", f"{len(rows) - failed}/{len(rows)} statistics PASS; parity keys "
                  f"(mean_input_scale, physics_scale, var_zero_mean): "
                  f"{len(parity) - parity_failed}/{len(parity)} PASS."]
    return "\n".join(lines) + "\n"


CONTEXT_TAGS = ("device", "device_name", "torch_version", "cuda_version", "python_version",
                "git_commit", "git_dirty", "seed", "implementation")
CONTEXT_TAG_PREFIXES = ("numerics.", "gpu.", "dataset.", "producer.")


def run_context(run) -> dict[str, str]:
    """What may explain a difference between runs: every param (``param:<name>``), and the
    tags naming device, versions, numerics settings and dataset digests (``tag:<name>``)."""
    context = {f"param:{key}": value for key, value in run.data.params.items()}
    for key, value in run.data.tags.items():
        if key in CONTEXT_TAGS or key.startswith(CONTEXT_TAG_PREFIXES):
            if key.startswith("dataset.") and key.endswith(".file"):
                continue  # the path differs between machines; the sha256 says what matters
            context[f"tag:{key}"] = value
    return context


def context_differences(contexts: dict[str, dict[str, str]]) -> list[dict]:
    """Keys whose values are not the same in every column; ``"missing": True`` when some
    column lacks the key (another kind of run, another implementation, older code)."""
    keys = sorted(set().union(*(set(c) for c in contexts.values())))
    rows = []
    for key in keys:
        values = {name: context.get(key) for name, context in contexts.items()}
        if len(set(values.values())) > 1:
            rows.append({"key": key, "values": values, "missing": None in values.values()})
    return rows


def differences_markdown(rows: list[dict], names: list[str]) -> str:
    if not rows:
        return "\nParams, device, versions, numerics and dataset digests: the same in all runs.\n"
    lines = ["", "What differs between the runs (params, device, versions, numerics, datasets):",
             ""]
    differing = [row for row in rows if not row["missing"]]
    if differing:
        lines += ["| param / tag | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for row in differing:
            cells = " | ".join(_short(row["values"][n]) for n in names)
            lines.append(f"| {row['key']} | {cells} |")
    else:
        lines.append("No param or tag that all runs have differs.")
    partial = [row["key"] for row in rows if row["missing"]]
    if partial:
        lines += ["", f"Present in some runs only ({len(partial)}; values in compare.json): "
                  + ", ".join(f"`{key}`" for key in partial)]
    return "\n".join(lines) + "\n"


def _short(value: str, limit: int = 40) -> str:
    value = value.replace("|", "\\|")
    return value if len(value) <= limit else value[:limit - 1] + "…"


def _run_records(client, run_id: str) -> list[dict] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "analysis/torch_patch_stats.json", tmp)
            return read_json(path)
        except Exception:  # noqa: BLE001 - no artifact: the caller falls back to metrics
            return None


def _run_columns(client, run_ids: list[str]) -> tuple[dict[str, dict[str, float]],
                                                      dict[str, dict[str, str]],
                                                      dict[str, list[dict]]]:
    """Per run: its statistics column, its context (params and tags) and its records."""
    columns, contexts, records_by = {}, {}, {}
    for run_id in run_ids:
        run = _get_run(client, run_id, "run")
        records = _run_records(client, run_id)
        if records:
            stats = summarize_records(records)
        else:
            stats = {key[len("patch/"):]: value for key, value in run.data.metrics.items()
                     if key.startswith("patch/")}
        from tracking.tf_dump import run_dump_statistics

        stats.update(run_dump_statistics(client, run_id))  # forward_parity_debug/, if logged
        if not stats:
            raise CompareError(f"run {run_id}: no patch statistics (was --log-patch-stats on?)")
        label = f"{run.info.run_name or run_id} ({run_id[:8]})"
        columns[label], contexts[label], records_by[label] = stats, run_context(run), records or []
    return columns, contexts, records_by


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracking.compare",
        description="Compare patch statistics of tracked runs (and/or a reference JSON); "
                    "PASS/FAIL per statistic against a relative tolerance.")
    parser.add_argument("run_ids", nargs="*", help="MLflow run ids; the first is the baseline")
    parser.add_argument("--experiment", default=None,
                        help="compare the latest --last runs of this experiment instead")
    parser.add_argument("--last", type=int, default=2,
                        help="how many latest runs with --experiment (default: %(default)s)")
    parser.add_argument("--kind", choices=["train", "inference"], default=None,
                        help="with --experiment: only runs of this kind")
    parser.add_argument("--reference", action="append", default=[],
                        help="a records JSON or reference record, or a folder holding one "
                             "and/or a debug dump (ours or the TF reference's); the first "
                             "column(s); repeatable (docs/reference_record.md)")
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="relative tolerance per statistic (default: %(default)s)")
    parser.add_argument("--keys", default=None,
                        help="regular expression selecting statistics, e.g. 'inference/'")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the "
                             "embedded sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--output-dir", default="compare_reports",
                        help="folder for compare.md, compare.json and compare.png "
                             "(default: %(default)s)")
    parser.add_argument("--log-to", default=None, metavar="RUN_ID",
                        help="also log compare.md, compare.json and compare.png as artifacts "
                             "(under compare/) of this MLflow run")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # table only
    try:
        return _main(args)
    except CompareError as exc:
        print(redact(f"python -m tracking.compare: error: {exc}"), file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.tolerance < 0:
        raise CompareError(f"--tolerance must be >= 0, got {args.tolerance}")
    run_ids = list(args.run_ids)
    client = _client(args) if run_ids or args.experiment or args.log_to else None
    if args.log_to:  # checked before anything is written
        _get_run(client, args.log_to, "--log-to")
    columns: dict[str, dict[str, float]] = {}
    contexts: dict[str, dict[str, str]] = {}
    records_by: dict[str, list[dict]] = {}
    for reference in args.reference:
        from tracking.reference import ReferenceError, reference_column

        try:
            label, stats = reference_column(reference)
        except ReferenceError as exc:
            raise CompareError(f"--reference {exc}") from exc
        columns[label if label not in columns else f"{label} #{len(columns) + 1}"] = stats
    if run_ids or args.experiment:
        if args.experiment:
            experiment = client.get_experiment_by_name(args.experiment)
            if experiment is None:
                raise CompareError(f"--experiment {args.experiment!r} not found")
            query = f"tags.run_kind = '{args.kind}'" if args.kind else ""
            runs = client.search_runs([experiment.experiment_id], filter_string=query,
                                      order_by=["attributes.start_time DESC"],
                                      max_results=args.last)
            run_ids += [run.info.run_id for run in reversed(runs)]
        run_columns, contexts, records_by = _run_columns(client, run_ids)
        columns.update(run_columns)
    if len(columns) < 2:
        raise CompareError("need two or more columns: runs and/or --reference paths")
    rows = compare(columns, args.tolerance, args.keys)
    if not rows:
        raise CompareError("no statistic is common to all columns")
    names = list(columns)
    differences = context_differences(contexts) if len(contexts) >= 2 else []
    markdown = to_markdown(rows, names, args.tolerance)
    if len(contexts) >= 2:
        markdown += differences_markdown(differences, list(contexts))
    print(markdown, end="")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from tracking.compare_figure import save_compare_png
    from tracking.files import atomic_write_json, atomic_write_text

    atomic_write_text(out / "compare.md", markdown)
    atomic_write_json(out / "compare.json", {"tolerance": args.tolerance, "columns": names,
                                             "rows": rows, "differences": differences})
    save_compare_png(out / "compare.png", rows, names, args.tolerance, records_by)
    if args.log_to:
        _log_report(client, args, out)
    return 1 if any(row["verdict"] == "FAIL" for row in rows) else 0


def _client(args: argparse.Namespace):
    from mlflow import MlflowClient

    from tracking.store import resolve_tracking_uri

    return MlflowClient(tracking_uri=resolve_tracking_uri(args.tracking_uri))


def _get_run(client, run_id: str, what: str):
    """The run, or a one-line CompareError naming ``what`` (``run``, ``--log-to``)."""
    try:
        return client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - backend errors become one line
        raise CompareError(f"{what} {run_id}: not found ({str(exc).splitlines()[0]})") from exc


def _log_report(client, args: argparse.Namespace, out: Path) -> None:
    """compare.md/json/png as artifacts of run ``--log-to`` (under compare/)."""
    for name in ("compare.md", "compare.json", "compare.png"):
        client.log_artifact(args.log_to, str(out / name), "compare")
    logger.info("logged the report to run %s (compare/)", args.log_to)


if __name__ == "__main__":
    sys.exit(cli_main())
