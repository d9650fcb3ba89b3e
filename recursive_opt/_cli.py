"""The `recursive-opt` command: `demo` (the README's main job) and `sweep`."""

import argparse
import os
import sys
import tempfile

import numpy as np

PROG = "recursive-opt"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option raises: `main` prints the usage line and one error
    line on stderr and returns exit code 2."""

    def error(self, message):
        raise _UsageError(message, self.format_usage())


class _UsageError(Exception):
    def __init__(self, message: str, usage: str = ""):
        super().__init__(message)
        self.usage = usage


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _parser() -> _Parser:
    from . import __version__

    parser = _Parser(prog=PROG, description="Recursive optimisation in JAX.")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(
        dest="command", metavar="{demo,sweep}", parser_class=_Parser
    )
    sub.required = True
    demo = sub.add_parser(
        "demo",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train an MLP on digits with Adam and with the default tower",
        description="Train a Flax NNX MLP on scikit-learn's digits with plain Adam "
        "and with the default tower Stack[DEPTH](Adam(lr)), each from every initial "
        "lr of --lrs; print a table and write DIR/demo.png (loss and level-1 lr "
        "against step).",
    )
    demo.add_argument(
        "--steps",
        type=_positive_int,
        default=1000,
        help="training steps",
    )
    demo.add_argument(
        "--lrs",
        type=_positive_float,
        nargs="+",
        default=[1e-5, 1e-3, 1.0],
        metavar="LR",
        help="initial learning rates",
    )
    demo.add_argument(
        "--depth",
        type=_positive_int,
        default=3,
        help="height of the tower",
    )
    demo.add_argument(
        "--out", default="recursive-opt-out", metavar="DIR", help="output directory"
    )
    demo.add_argument(
        "--no-progress", action="store_true", help="hide the progress bars"
    )
    sweep = sub.add_parser(
        "sweep",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="final loss vs initial lr for towers of several heights",
        description="Run ro.sweep over a log-spaced grid of initial learning rates "
        "for each stack height on digits; print a table and write DIR/sweep.png.",
    )
    sweep.add_argument(
        "--heights",
        type=_positive_int,
        nargs="+",
        default=[1, 2, 3],
        metavar="H",
        help="tower heights, one sweep each (Stack[H] with the default levels)",
    )
    sweep.add_argument(
        "--optimiser",
        choices=["adam", "sgd"],
        default="adam",
        help="level 1: Adam, or SGD without momentum",
    )
    sweep.add_argument(
        "--tie", action="store_true", help="tied towers (every level the same)"
    )
    sweep.add_argument(
        "--lr-min", type=_positive_float, default=1e-4, help="smallest initial lr"
    )
    sweep.add_argument(
        "--lr-max", type=_positive_float, default=1.0, help="largest initial lr"
    )
    sweep.add_argument(
        "--num", type=_positive_int, default=9, help="log-spaced initial lrs"
    )
    sweep.add_argument(
        "--steps", type=_positive_int, default=500, help="training steps per run"
    )
    sweep.add_argument(
        "--out", default="recursive-opt-out", metavar="DIR", help="output directory"
    )
    sweep.add_argument(
        "--no-progress", action="store_true", help="hide the progress bars"
    )
    return parser


def _writable(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise _UsageError(
            f"cannot write to --out {directory!r}: {e.strerror or e}"
        ) from None


def main(argv=None) -> int:
    """Entry point of `recursive-opt` and `python -m recursive_opt`."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "sweep" and not args.lr_min < args.lr_max:
            raise _UsageError(
                f"--lr-min ({args.lr_min}) must be below --lr-max ({args.lr_max})"
            )
        if args.command == "sweep" and args.tie and 1 in args.heights:
            raise _UsageError("--tie needs heights of at least 2")
        _writable(args.out)
    except _UsageError as e:
        print(e.usage or parser.format_usage(), end="", file=sys.stderr)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from . import _demo

    try:
        if args.command == "demo":
            _demo.demo(
                args.steps,
                args.lrs,
                args.out,
                depth=args.depth,
                progress=not args.no_progress,
            )
        else:
            _demo.lr_sweep(args, progress=not args.no_progress)
    except ImportError as e:
        print(
            f"{PROG}: error: {e} (pip install 'recursive_opt[demo]')", file=sys.stderr
        )
        return 1
    return 0
