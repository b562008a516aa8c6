"""The ``ner-quality`` command line.

Each sub-command lives in ``ls_backend/commands/<name>.py`` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``.  Heavy imports (torch, transformers,
the SDK) happen inside ``run`` so ``ner-quality convert`` stays fast.

User errors (``ValueError``, ``TypeError``, ``FileNotFoundError``, ``UnicodeDecodeError``,
``KeyError`` from bad input) print one line ``ner-quality: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "convert",
    "evaluate",
    "errors",
    "train",
    "predict",
    "dep",
    "serve",
    "sync",
    "analyze",
    "push",
    "report",
    "demo",
)


class UserError(Exception):
    """An error caused by the user's input or environment: printed as one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ner-quality",
        description="Find and fix errors in NER datasets, inside Label Studio.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "WARNING"),
        help="logging level (default: $LOG_LEVEL or WARNING)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"ls_backend.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ls_backend.commands.{name}":
                continue  # command not built yet
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc = args._run(args)
    except KeyboardInterrupt:
        print("ner-quality: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, FileNotFoundError, UnicodeDecodeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            msg = f"no such file: {exc.filename}"
        print(f"ner-quality: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
