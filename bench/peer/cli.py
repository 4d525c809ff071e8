"""The flags of ``python -m bench.peer``: parse, check, run :func:`bench.peer.runs.compare`,
write the report."""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
from pathlib import Path

from bench.common import results_dir
from bench.peer.ptychi import PtychiMissing, PtychiSettings, import_ptychi
from bench.peer.record import ModelInfo
from bench.peer.runs import DEFAULT_TRAIN, PeerSettings, compare, ensure_data, train_default_model

PROG = "python -m bench.peer"
# flags that count something and must be >= 1
COUNTS = ("epie_iters", "lsqml_iters", "ptychi_batch_size", "repeats", "checkpoint_every",
          "convergence_window", "train_epochs", "inference_batch_size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare our trained model's stitched reconstruction with pty-chi ePIE and "
                    "LSQML (fixed known probe and positions, object from ones, run to "
                    "convergence) on the same simulated test scan: SSIM, PSNR, FRC50 against "
                    "the ground truth and wall time. Needs the bench extra: "
                    "pip install -e '.[bench]'.")
    _add_input_args(parser)
    _add_ptychi_args(parser)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="device for our inference, pty-chi and the default training "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for everything timed (0: torch's default) "
                             "(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats of our inference after one warm-up; the median is "
                             "reported (default: %(default)s)")
    parser.add_argument("--inference-batch-size", type=int, default=256,
                        help="groups per forward pass of our inference (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for simulation, training and pty-chi (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="folder for <date>-<device>-peer.json, .md, .png and "
                             "-peer-convergence.png (default: bench/results of this checkout)")
    return parser


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default="datasets",
                        help="folder with train.npz and test.npz from python -m "
                             "ptycho_torch.simulate; both are simulated with the default "
                             "settings when either is missing (default: %(default)s)")
    parser.add_argument("--model-dir", default=None,
                        help="trained model folder (model.pt, config.json) from python -m "
                             "ptycho_torch.train; when omitted, one is trained on "
                             "<data-dir>/train.npz into --train-dir with the project baseline's "
                             "settings: 10 epochs, 256 groups, gridsize 2, batch 4, Poisson "
                             "loss, deterministic (about 2-4 min on 2 CPU cores)")
    parser.add_argument("--train-dir", default="outputs/peer-model",
                        help="where the default model is trained when --model-dir is omitted "
                             "(default: %(default)s)")
    parser.add_argument("--train-epochs", type=int, default=DEFAULT_TRAIN["max_epochs"],
                        help="epochs of that default training (default: %(default)s)")


def _add_ptychi_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epie-iters", type=int, default=300,
                        help="pty-chi ePIE iterations (epochs over all positions); the default "
                             "is where the data-fit loss had flattened on the default scan "
                             "(default: %(default)s)")
    parser.add_argument("--lsqml-iters", type=int, default=200,
                        help="pty-chi LSQML iterations, chosen likewise (default: %(default)s)")
    parser.add_argument("--ptychi-batch-size", type=int, default=32,
                        help="pty-chi minibatch (positions per update); ePIE converges per "
                             "epoch as with single-position updates, at a fraction of the time "
                             "(default: %(default)s)")
    parser.add_argument("--epie-alpha", type=float, default=1.0,
                        help="ePIE object step alpha (Maiden 2017, table 1); 1 is classic ePIE "
                             "(default: %(default)s)")
    parser.add_argument("--lsqml-noise", choices=["gaussian", "poisson"], default="gaussian",
                        help="LSQML noise model (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=10,
                        help="score pty-chi's object after iterations 1, 2, 5 and every this "
                             "many, for the SSIM vs time curve and the time to reach our SSIM "
                             "(scoring is not timed) (default: %(default)s)")
    parser.add_argument("--convergence-window", type=int, default=20,
                        help="iterations over which the loss must have flattened "
                             "(default: %(default)s)")
    parser.add_argument("--convergence-tolerance", type=float, default=0.005,
                        help="flat = relative loss decrease over the window below this "
                             "(default: %(default)s)")


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the flags, pty-chi or the device; None when there is none."""
    problems = [f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
                for name in COUNTS if getattr(args, name) < 1]
    if args.threads < 0:
        problems.append(f"--threads must be >= 0, got {args.threads}")
    if problems:
        return problems[0]
    try:
        import_ptychi()
    except PtychiMissing as exc:
        return str(exc)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda asked for, but no CUDA device is visible to torch"
    if args.model_dir is not None and not (Path(args.model_dir) / "model.pt").is_file():
        return (f"--model-dir {args.model_dir}: no model.pt (a training output folder "
                "expected)")
    return None


def settings_from_args(args: argparse.Namespace) -> PeerSettings:
    ptychi = PtychiSettings(batch_size=args.ptychi_batch_size, device=args.device,
                            seed=args.seed, epie_alpha=args.epie_alpha,
                            lsqml_noise=args.lsqml_noise, checkpoint_every=args.checkpoint_every)
    return PeerSettings(device=args.device, repeats=args.repeats,
                        inference_batch_size=args.inference_batch_size,
                        epie_iters=args.epie_iters, lsqml_iters=args.lsqml_iters,
                        convergence_window=args.convergence_window,
                        convergence_tolerance=args.convergence_tolerance, ptychi=ptychi)


def prepare_model(args: argparse.Namespace, data_dir: Path) -> ModelInfo:
    """The model given with --model-dir, else one trained here into --train-dir."""
    if args.model_dir is not None:
        return ModelInfo(dir=str(Path(args.model_dir)), how="given with --model-dir")
    command, seconds = train_default_model(data_dir, Path(args.train_dir), args.device,
                                           args.seed, args.train_epochs, args.threads)
    return ModelInfo(dir=str(Path(args.train_dir)),
                     how=f"trained here in {seconds:.0f} s: "
                         + shlex.join(["python", *command[1:]]))


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Data, model, comparison, report files; the markdown is printed."""
    from bench.peer.report import write_report
    from ptycho_torch import load_scan

    data_dir = Path(args.data_dir)
    ensure_data(data_dir, args.seed)
    scan = load_scan(data_dir / "test.npz")
    if scan.object_guess is None:
        return _error(f"{scan.path}: no objectGuess; a simulated scan is needed")
    model = prepare_model(args, data_dir)
    report, objects = compare(scan, model, settings_from_args(args),
                              shlex.join(["python", "-m", "bench.peer", *argv]))
    stem = (Path(args.out) if args.out else results_dir()) / f"{report.date}-{args.device}-peer"
    markdown = write_report(stem, report, scan.object_guess, objects)
    print(markdown)
    print(f"wrote {stem}.json, .md, .png and -convergence.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem is not None:
        return _error(problem)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("ptychi").setLevel(logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ptycho_torch.errors import InputError

    try:
        return run(args, argv)
    except InputError as exc:  # a damaged or foreign scan or model file: one line, exit 2
        return _error(str(exc))
    except subprocess.CalledProcessError as exc:
        print(f"{PROG}: error: {shlex.join(exc.cmd[1:])} failed (exit {exc.returncode})",
              file=sys.stderr)
        return 1
