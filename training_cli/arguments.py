"""Argument helpers shared by the sub-commands: config overrides and task groups."""

from __future__ import annotations

import argparse
import sys


def add_overrides_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE ...`` (dotted config keys, YAML values), collected in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"override configuration values (YAML values), e.g. --set {example}")


def add_task_group(sub: argparse._SubParsersAction, name: str, help: str, description: str,
                   dest: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A command whose work is chosen by a second word (``finetune seg``); alone it prints its help."""
    parser = sub.add_parser(name, help=help, description=description)
    tasks = parser.add_subparsers(dest=dest, metavar="TASK")

    def show_help(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=show_help)
    return parser, tasks
