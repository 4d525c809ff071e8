"""Flags shared by train and inference, parsed once; clean one-line errors for users."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable

from ptycho_torch.config import Accelerator, ExecutionConfig
from ptycho_torch.errors import GroupCountError, InputError, ModelFolderError
from tracking.redaction import RedactingFormatter, install_log_record_redaction, redact

logger = logging.getLogger(__name__)

LOGGER_CHOICES = ("mlflow", "tensorboard", "csv", "none")


class UsageError(ValueError):
    """Bad flag values or an environment that cannot do what was asked; exit code 2."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def logger_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    bad = [name for name in names if name not in LOGGER_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown logger(s) {bad or text!r}; choose a comma list of {', '.join(LOGGER_CHOICES)}"
        )
    return () if "none" in names else names


def add_execution_args(parser: argparse.ArgumentParser, mode: str) -> None:
    """Execution, instrumentation and tracking flags; mode is "train" or "inference"."""
    group = parser.add_argument_group("execution")
    group.add_argument("--accelerator", choices=[a.value for a in Accelerator], default="auto",
                       help="device to run on; auto picks a CUDA GPU when one is visible, and "
                            "gpu/cuda fail loudly without one (default: %(default)s)")
    group.add_argument("--devices", type=positive_int, default=1,
                       help="number of devices (default: %(default)s)")
    group.add_argument("--strategy", default="auto",
                       help="Lightning strategy, e.g. ddp (default: %(default)s)")
    if mode == "train":
        group.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                           help="deterministic algorithms and seeded everything "
                                "(default: on)")
        group.add_argument("--num-workers", "--num_workers", type=non_negative_int, default=0,
                           help="DataLoader worker processes (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed for grouping, splits and initialization (default: %(default)s)")
    group.add_argument("--quiet", action="store_true",
                       help="no progress bars; log lines (and PATCH_STATS evidence) still print")

    stats = parser.add_argument_group("patch statistics (forward-parity instrumentation)")
    stats.add_argument("--log-patch-stats", action="store_true",
                       help="record per-patch statistics of every forward stage for the first "
                            "--patch-stats-limit batches of each stage (off by default: then "
                            "nothing is hooked or kept)")
    stats.add_argument("--patch-stats-limit", type=positive_int, default=1,
                       help="batches to instrument per stage name (train, val, inference); "
                            "must be >= 1 (default: %(default)s)")
    stats.add_argument("--patch-stats-dir", default=None,
                       help="where torch_patch_stats.json and torch_patch_grid.png go "
                            "(default: <output_dir>/analysis)")
    if mode == "train":
        stats.add_argument("--patch-stats-every-epochs", type=positive_int, default=None,
                           metavar="E",
                           help="with --log-patch-stats, also record the first training "
                                "batch of every E-th epoch and of the last, so a collapse "
                                "during training shows as a curve (default: off)")

    track = add_tracking_args(parser)
    track.add_argument("--run-name", default=None, help="run name shown in the UIs")
    track.add_argument("--system-metrics-interval", type=non_negative_float, default=5.0,
                       metavar="SECONDS",
                       help="seconds between system-metrics samples (CPU, memory, disk, "
                            "network, NVIDIA GPU utilization and memory) in the MLflow run; "
                            "0 turns them off (default: %(default)s)")
    if mode == "train":
        track.add_argument("--log-checkpoints", action=argparse.BooleanOptionalAction,
                           default=True,
                           help="upload the Lightning checkpoints (last, best) as run "
                                "artifacts beside model/ (default: on; --no-log-checkpoints "
                                "for large models)")
        track.add_argument("--register-model", default=None, metavar="NAME",
                           help="register the trained model in the MLflow model registry as "
                                "NAME, a new version per run: inference then takes "
                                "--model_path models:/NAME/<version> (default: not registered)")
    track.add_argument("--parent-run-id", default=None,
                       help="MLflow run id to nest this run under (the baseline passes its "
                            "own; default: none)")


def add_tracking_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--logger, --tracking-uri, --experiment-name (train, inference, baseline)."""
    track = parser.add_argument_group("tracking (MLflow + TensorBoard)")
    track.add_argument("--logger", type=logger_list, default=("mlflow", "tensorboard"),
                       help="comma list of mlflow, tensorboard, csv, or none "
                            "(default: mlflow,tensorboard)")
    track.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI if set, else "
                            "the embedded sqlite:///mlruns/mlflow.db)")
    track.add_argument("--experiment-name", default="ptycho_torch",
                       help="MLflow experiment / TensorBoard folder (default: %(default)s)")
    return track


def build_execution_config_from_args(args: argparse.Namespace, mode: str) -> ExecutionConfig:
    """One ExecutionConfig from parsed flags, for "train" or "inference"."""
    if mode not in ("train", "inference"):
        raise ValueError(f"mode must be 'train' or 'inference', got {mode!r}")
    return ExecutionConfig(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        deterministic=getattr(args, "deterministic", True),
        num_workers=getattr(args, "num_workers", 0),
        quiet=args.quiet,
        seed=args.seed,
        log_patch_stats=args.log_patch_stats,
        patch_stats_limit=args.patch_stats_limit,
        patch_stats_dir=args.patch_stats_dir,
        patch_stats_every_epochs=getattr(args, "patch_stats_every_epochs", None),
        loggers=args.logger,
        tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
        experiment_name=args.experiment_name,
        run_name=args.run_name,
        system_metrics_interval_s=args.system_metrics_interval,
        log_checkpoints=getattr(args, "log_checkpoints", True),
        register_model=getattr(args, "register_model", None),
    )


def check_strategy(strategy: str) -> None:
    """A Lightning strategy name, checked before anything is written."""
    from lightning.pytorch.strategies import StrategyRegistry

    if strategy != "auto" and strategy not in StrategyRegistry:
        raise UsageError(f"--strategy {strategy!r} is not a Lightning strategy "
                         "(e.g. auto, ddp, ddp_spawn)")


def resolve_device(accelerator: Accelerator) -> str:
    """"cpu" or "cuda"; a GPU asked for but not visible is a usage error, never a CPU run."""
    import torch

    if accelerator == Accelerator.AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in (Accelerator.GPU, Accelerator.CUDA):
        if not torch.cuda.is_available():
            raise UsageError(f"--accelerator {accelerator.value} asked for, but no CUDA device "
                             "is visible to torch")
        return "cuda"
    return "cpu"


def configure_logging(quiet: bool) -> None:
    """INFO lines to stderr (PATCH_STATS evidence included, quiet or not); with quiet,
    Lightning's own chatter is limited to warnings."""
    root = logging.getLogger()
    if not any(getattr(handler, "is_ptycho_handler", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        # every line redacted: MLflow's and Lightning's own lines pass here too
        handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
        handler.is_ptycho_handler = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # Python warnings through the same (redacting) handler
    install_log_record_redaction()  # and any other handler (MLflow has its own)
    # Lightning 2.6 on torch 2.14 warns about its own use of a torch pytree class on every
    # fit; the user can do nothing about it
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
    level = logging.WARNING if quiet else logging.INFO
    # (mlflow sets its own top logger's level when imported: its children are set here)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow.system_metrics",
                 "mlflow.store", "alembic"):
        logging.getLogger(name).setLevel(level)


def describe_error(exc: Exception) -> str:
    """A library error as the CLIs say it: in terms of their flags."""
    if isinstance(exc, GroupCountError):
        return (f"{exc.path}: key 'xcoords': --n_images {exc.requested} exceeds the "
                f"{exc.available} groups this scan provides (one per scan point); at most "
                f"{exc.available} expected")
    if isinstance(exc, ModelFolderError):
        if exc.problem == "incomplete":
            return (f"{exc.path}: holds no {exc.missing_file}; --model_path must be a "
                    "training output folder (model.pt and config.json)")
        return f"--model_path {exc}"
    return str(exc)


def run_cli(main: Callable[[], int], prog: str) -> int:
    """Run a CLI body; library input errors, usage and tracking-store errors become one
    stderr line and exit 2."""
    from tracking.store import TrackingUnavailable

    try:
        return main()
    except (InputError, UsageError, TrackingUnavailable) as exc:
        print(redact(f"{prog}: error: {describe_error(exc)}"), file=sys.stderr)
        return 2
