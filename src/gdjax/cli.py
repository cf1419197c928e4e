"""What the command-line scripts share: options parsed one way, and how a run stops.

Every script in ``scripts/`` builds its parser with :func:`parser` (defaults
shown in ``--help``) and the option groups below, and runs its ``main``
through :func:`run`. While it works it names its stage with :func:`stage`
(what runs, what is already on disk, the command that resumes); on Ctrl-C
(SIGINT) or SIGTERM, :func:`run` prints that as one line instead of a
traceback and returns 130 or 143, the shell's codes for the two signals::

    interrupted while training (runs/a); saved: checkpoint of epoch 40 in runs/a;
    resume: python scripts/train.py --epochs 200 --out runs/a
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "parser",
    "add_model_options",
    "add_data_option",
    "add_precision_option",
    "add_progress_option",
    "add_output_options",
    "parse_hidden",
    "stage",
    "run",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
]

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


# ---------------------------------------------------------------- options


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is the first paragraph of ``doc`` and
    whose ``--help`` shows every option's default."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def add_model_options(p: argparse.ArgumentParser, *, hidden: str = "16,16", activation="tanh"):
    """``--hidden`` (widths, comma- or space-separated) and ``--activation``."""
    from gdjax import activations

    p.add_argument(
        "--hidden",
        default=hidden,
        help="hidden widths, comma-separated ('' for none)",
    )
    p.add_argument("--activation", default=activation, choices=activations.names())


def add_data_option(p: argparse.ArgumentParser, *, default: str = "moons") -> None:
    """``--data``: one of :func:`gdjax.data.names`."""
    from gdjax import data

    p.add_argument("--data", default=default, choices=data.names(), help="built-in data set")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--float64``: compute in float64 (``jax_enable_x64``)."""
    p.add_argument("--float64", action="store_true", help="compute in float64")


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars."""
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_output_options(p: argparse.ArgumentParser, *, out: str | None) -> None:
    """``--out`` (the results directory) and ``--format`` of the figures."""
    p.add_argument("--out", default=out, help="results directory")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"], help="figures")


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"16,16"`` or ``"16 16"`` → ``(16, 16)``; ``""`` → ``()``.

    >>> parse_hidden("16, 16"), parse_hidden("8 4"), parse_hidden("")
    ((16, 16), (8, 4), ())
    """
    parts = [w for w in text.replace(",", " ").split() if w]
    try:
        widths = tuple(int(w) for w in parts)
    except ValueError:
        raise ValueError(
            f"--hidden: expected positive integers, comma-separated, got {text!r}."
        ) from None
    if any(w < 1 for w in widths):
        raise ValueError(f"--hidden: expected positive integers, got {text!r}.")
    return widths


# ---------------------------------------------------------------- stages and signals


@dataclass
class _Stage:
    what: str
    saved: str | Callable[[], str] | None
    resume: str | None


_STAGES: list[_Stage] = []


@contextlib.contextmanager
def stage(
    what: str, *, saved: str | Callable[[], str] | None = None, resume: str | None = None
) -> Iterator[None]:
    """Name what the script is doing, for the line an interruption prints.

    Args:
      what: e.g. ``"training (runs/a)"``.
      saved: what is on disk if it stops now, or a function that says so when
        called (e.g. reading the last checkpoint's epoch).
      resume: the command that continues from there.
    """
    _STAGES.append(_Stage(what, saved, resume))
    try:
        yield
    except (KeyboardInterrupt, _Terminated):
        global _interrupted
        if _interrupted is None:  # the innermost stage, before the unwinding pops it
            _interrupted = _STAGES[-1]
        raise
    finally:
        _STAGES.pop()


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


_interrupted: _Stage | None = None


def _on_sigterm(signum, frame):
    raise _Terminated


def interruption_message() -> str:
    """The one line :func:`run` prints: the innermost stage, what is saved, how to resume."""
    global _interrupted
    current, _interrupted = _interrupted or (_STAGES[-1] if _STAGES else None), None
    if current is None:
        return "interrupted; nothing was saved."
    saved = current.saved() if callable(current.saved) else current.saved
    line = f"interrupted while {current.what}; saved: {saved or 'nothing'}"
    if current.resume:
        line += f"; resume: {current.resume}"
    return line + "."


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)``, with Ctrl-C and SIGTERM turned into one line and exit 130 / 143.

    Use as ``sys.exit(cli.run(main))`` at the bottom of a script.
    """
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"\n{interruption_message()}", file=sys.stderr)
        return EXIT_SIGINT
    except _Terminated:
        print(f"\n{interruption_message()}", file=sys.stderr)
        return EXIT_SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
