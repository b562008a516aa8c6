"""The ``ner-quality`` command line.

Each sub-command lives in ``ls_backend/commands/<name>.py`` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``.  Heavy imports (torch, transformers,
the SDK) happen inside ``run`` so ``ner-quality convert`` stays fast.

Settings come from the environment once (:class:`ls_backend.settings.Settings`, ``args.settings``);
no command reads ``os.environ`` itself.  Bad input (:class:`analysis.exceptions.DataError` and
the other ``ValueError`` / ``TypeError`` raised for it, a missing file or a directory where a
file is expected, JSON nested too deeply) prints one line ``ner-quality: error: ...`` and exits
2; ``--log-level DEBUG`` adds the traceback.  An unknown option is reported by the sub-command
it was given to (its usage line, exit 2).

The sub-commands' descriptions are their module docstrings, written in reST for the API docs;
:func:`plain_help` turns every description and help text into plain sentences for ``--help``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import re
import sys
from collections.abc import Sequence

# Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "convert",
    "convert-probs",
    "evaluate",
    "errors",
    "train",
    "predict",
    "probe",
    "dep",
    "serve",
    "sync",
    "analyze",
    "push",
    "report",
    "demo",
)


#: one-shot analysis commands: tuned for throughput (:func:`retain_freed_memory`, no cyclic GC)
BATCH_COMMANDS = frozenset({"analyze", "dep", "report", "push", "evaluate", "errors", "convert",
                            "convert-probs"})


class UserError(Exception):
    """An error caused by the user's input or environment: printed as one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ner-quality",
        description="Find and fix errors in NER datasets, inside Label Studio.",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        help="logging level (default: $LOG_LEVEL or WARNING)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f"ls_backend.commands.{name.replace('-', '_')}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run, _parser=p)
    plain_help(parser)
    return parser


# reST inline markup, in the order plain_text removes it: a role (``:func:`x```, ``:py:mod:`x```)
# first, as it wraps single backticks; then ``literal``; a link `text <url>`_; `interpreted`;
# **strong**; the ``::`` that announces a literal block.
_ROLE = re.compile(r"(?::[A-Za-z][\w+.-]*)+:`([^`]+)`")
_LITERAL = re.compile(r"``(\S(?:.*?\S)??)``", re.DOTALL)
_LINK = re.compile(r"`([^`<]+?)\s*<([^`>]+)>`__?")
_INTERPRETED = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)??)\*\*", re.DOTALL)
_BLOCK_MARKER_ATTACHED = re.compile(r"(?<=\S)::$", re.MULTILINE)  # "Example::" -> "Example:"
_BLOCK_MARKER_ALONE = re.compile(r"[ \t]*(?<!\S)::$", re.MULTILINE)  # "Example ::" -> "Example"


def _role_text(match: re.Match[str]) -> str:
    """What a role shows: ``title <target>`` -> title, ``~a.b.c`` -> c, ``!x`` -> x."""
    content = match.group(1).strip()
    titled = re.fullmatch(r"(.+?)\s*<[^<>]+>", content, re.DOTALL)
    if titled:
        return titled.group(1)
    content = content.lstrip("!")
    if content.startswith("~"):
        return content[1:].rsplit(".", 1)[-1]
    return content


def plain_text(text: str) -> str:
    r"""``text`` with its reST inline markup removed, for a terminal.

    Layout (line breaks, indentation) is kept, so a ``RawDescriptionHelpFormatter`` still
    prints the paragraphs as written.

    >>> plain_text("``ner-quality analyze``: see :func:`analysis.dep.compute_dep`")
    'ner-quality analyze: see analysis.dep.compute_dep'
    >>> plain_text(":class:`~ls_backend.settings.Settings` and :mod:`the probs <analysis.probs>`")
    'Settings and the probs'
    >>> plain_text("the `Label Studio <https://labelstud.io>`_ API, `default` role, **bold**")
    'the Label Studio (https://labelstud.io) API, default role, bold'
    >>> plain_text("Example::\n\n    ner-quality demo\n\nOr ::\n\n    ner-quality serve")
    'Example:\n\n    ner-quality demo\n\nOr\n\n    ner-quality serve'
    >>> plain_text("every ``O`` token (``analysis/dep/errormodel.py``), **a** and **b c**")
    'every O token (analysis/dep/errormodel.py), a and b c'
    >>> plain_text("nerq_* fields, 100 % and %(default)s stay")
    'nerq_* fields, 100 % and %(default)s stay'
    """
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(r"\1 (\2)", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _BLOCK_MARKER_ATTACHED.sub(":", text)
    return _BLOCK_MARKER_ALONE.sub("", text)


def plain_help(parser: argparse.ArgumentParser) -> None:
    """Rewrite, in place, every text ``--help`` prints with :func:`plain_text`.

    The parser's description and epilog, its argument groups' descriptions, every argument's
    help, and the same for each sub-command parser (and the one-line help of each sub-command
    in the parent's list), so no sub-command has to clean its own docstring.
    """
    seen: set[int] = set()

    def walk(p: argparse.ArgumentParser) -> None:
        if id(p) in seen:  # an alias maps to the same parser
            return
        seen.add(id(p))
        if p.description:
            p.description = plain_text(p.description)
        if p.epilog:
            p.epilog = plain_text(p.epilog)
        for group in p._action_groups:
            if group.description:
                group.description = plain_text(group.description)
        for action in p._actions:
            if action.help:
                action.help = plain_text(action.help)
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._get_subactions():
                    if choice.help:
                        choice.help = plain_text(choice.help)
                for sub_parser in action.choices.values():
                    walk(sub_parser)

    walk(parser)


def _error_line(exc: BaseException) -> str:
    """One line for the user: what went wrong, naming the file / task."""
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename}: is a directory, not a file"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename}"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"{exc.filename}: permission denied"
    if isinstance(exc, RecursionError):
        return "input is nested too deeply to read"
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return msg


def retain_freed_memory() -> bool:
    """Keep freed memory in the process for reuse (glibc only; returns whether it applied).

    glibc hands every freed block of 128 KB or more back to the kernel (``munmap``), so a batch
    command that allocates and frees gigabytes of temporaries (1 M tasks: ~15 M token rows) pays
    a page fault for every page of every new array — on virtual machines a fault the host serves,
    measured at ~4 ms per MB on the project's 2-core VM.  Allocating large blocks from the heap
    (``M_MMAP_MAX = 0``) and never trimming it (``M_TRIM_THRESHOLD`` at its maximum) lets later
    arrays reuse pages already faulted in.  The process's memory stays at its peak until it
    exits, which suits a one-shot command (:data:`BATCH_COMMANDS`; not ``serve``, ``train``,
    ``predict``, ``sync``, ``demo``).  Off with ``NERQ_RETAIN_MEMORY=0``.
    """
    import ctypes
    import platform

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def main(argv: Sequence[str] | None = None) -> int:
    from .settings import Settings

    parser = build_parser()
    args = _parse(parser, argv)
    try:
        args.settings = Settings.from_env()
    except ValueError as exc:
        print(f"ner-quality: error: {exc}", file=sys.stderr)
        return 2
    gc_was_enabled = gc.isenabled()
    if args.settings.retain_memory and args.command in BATCH_COMMANDS:
        retain_freed_memory()
        # these build millions of acyclic objects (tasks, spans) that live to the end; the
        # cyclic collector would walk them all again on every full collection (measured: a
        # 140k-task LS export loads in 2.7 s instead of 5.0 s); the command is short-lived
        gc.disable()
    try:
        return _run(args)
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown argument is an error of the sub-command (exit 2).

    ``parse_args`` would report it with the top-level usage, since argparse hands the
    sub-command's leftovers back to the top-level parser; the user needs the usage of the
    command they ran.  (A global option such as ``--log-level`` belongs before the command.)
    """
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub_parser: argparse.ArgumentParser = args._parser
        sub_parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _run(args: argparse.Namespace) -> int:
    level = str(args.log_level or args.settings.cli_log_level).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc = args._run(args)
    except KeyboardInterrupt:
        print("ner-quality: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (UserError, ValueError, TypeError, OSError, UnicodeDecodeError,
            RecursionError) as exc:
        logging.getLogger("ner-quality").debug("error details", exc_info=True)
        print(f"ner-quality: error: {_error_line(exc)}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
