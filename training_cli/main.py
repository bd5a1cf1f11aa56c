"""Entry point of ``planessl``: one sub-command per module in ``training_cli.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from PlaneSSLLib import __version__
from PlaneSSLLib.errors import PlaneSSLError, describe_os_error

#: Sub-command modules, in the order ``planessl --help`` lists them. Each has
#: ``register(subparsers) -> argparse.ArgumentParser`` and sets ``func`` on its parser.
COMMAND_MODULES = (
    "demo", "phantom", "inspect_cmd", "lines", "prepare", "pretrain", "evaluate_pretext", "finetune", "predict",
    "experiment", "plan", "evaluate_plan",
)


#: The command name each module registers: a run imports only its command's module (``planessl
#: predict seg`` never imports the phantom generator or the training stack), ``--help`` all of them.
COMMAND_NAMES = {
    "demo": "demo", "phantom": "phantom", "inspect": "inspect_cmd", "lines": "lines", "prepare": "prepare",
    "pretrain": "pretrain", "evaluate-pretext": "evaluate_pretext", "finetune": "finetune", "predict": "predict",
    "experiment": "experiment", "plan": "plan", "evaluate-plan": "evaluate_plan",
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The command a command line runs (its first word that is not an option), if it is a known one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMAND_NAMES else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``planessl`` parser with every command, or with command ``only`` alone (what a run needs)."""
    parser = argparse.ArgumentParser(
        prog="planessl",
        description=(
            "Self-supervised learning from anatomy-oriented MRI imaging planes (heart and knee): "
            "synthetic cohorts, study inspection, plane geometry."
        ),
    )
    parser.add_argument("--version", action="version", version=f"planessl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES if only is None else (COMMAND_NAMES[only],):
        importlib.import_module(f"training_cli.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # pydicom logs its decoders' tracebacks; our own messages name the file instead
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PlaneSSLError as exc:  # an expected failure: its message, no traceback; anything else is a bug
        print(f"planessl {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk, an unwritable output, a file in the way: said as such, no traceback
        message = describe_os_error(exc)
        if message is None:
            raise
        print(f"planessl {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"planessl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
