"""The markdown report of ``python -m bench``: one table per section that ran."""

from __future__ import annotations


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def train_table(rows: list[dict]) -> list[str]:
    lines = ["", "## Training step (gridsize 2, N 64; median)", "",
             "| batch | dtype | step ms | groups/s | peak device MiB |", "|---|---|---|---|---|"]
    return lines + [f"| {row['batch']} | {row['dtype']} | {row['step_ms']:.1f} | "
                    f"{row['groups_per_s']:.1f} | {_mib(row['peak_device_mib'])} |"
                    for row in rows]


def inference_table(rows: list[dict]) -> list[str]:
    lines = ["", "## Inference incl. stitching (gridsize 1, N 64, batch "
             f"{rows[0]['batch_size']}; median)", "",
             "Memory: rise of peak host RSS (and peak allocated device memory) during the call "
             "over what was resident before it (input scan and model already loaded); the "
             "stitching canvas (complex64 sum + float32 weight) is part of the rise and grows "
             "with the scanned area.", "",
             "| patterns | seconds | patterns/s | s per 1k | input MiB | canvas MiB | "
             "peak host rise MiB | peak device rise MiB |",
             "|---|---|---|---|---|---|---|---|"]
    return lines + [f"| {row['patterns']} | {row['seconds']:.2f} | "
                    f"{row['patterns_per_s']:.0f} | {row['seconds_per_1k']:.2f} | "
                    f"{row['input_mib']:.0f} | {row['canvas_mib']:.1f} | "
                    f"{_mib(row['peak_host_rise_mib'])} | {_mib(row['peak_device_rise_mib'])} |"
                    for row in rows]


def overheads_table(ov: dict) -> list[str]:
    lines = ["", f"## Overheads (train CLI processes, 2 epochs x 32 groups, {ov['repeats']} "
                 "interleaved repeats; median)", "", "| variant | median s |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in ov["median_seconds"].items()]
    return lines + ["", f"- patch stats on / off: **{ov['patch_stats_ratio']:.3f}**",
                    f"- default loggers / none: **{ov['tracking_ratio']:.3f}**"]


def to_markdown(result: dict) -> str:
    """The report of one ``python -m bench`` result (the dict its JSON file holds)."""
    lines = [f"# Benchmarks: {result['device_name']} ({result['date']})", "",
             f"torch {result['torch']}, mode {result['mode']}"]
    if result.get("train"):
        lines += train_table(result["train"])
    if result.get("inference"):
        lines += inference_table(result["inference"])
    if "overheads" in result:
        lines += overheads_table(result["overheads"])
    return "\n".join([*lines, ""])
