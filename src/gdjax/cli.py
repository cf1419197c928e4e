"""What the command-line scripts share: options parsed one way, and how a run stops.

Every script in ``scripts/`` builds its parser with :func:`parser` (defaults
shown in ``--help``) and the option groups below, and runs its ``main``
through :func:`run`. While it works it names its stage with :func:`stage`
(what runs, what is already on disk, the command that resumes); on Ctrl-C
(SIGINT) or SIGTERM, :func:`run` prints that as one line instead of a
traceback and returns 130 or 143, the shell's codes for the two signals::

    interrupted while training (runs/a); saved: checkpoint of epoch 40 in runs/a;
    resume: python scripts/train.py --epochs 200 --out runs/a

Compile latency: a script run through :func:`run` keeps what XLA compiles in
JAX's persistent compilation cache, in :func:`compile_cache_dir`
(``$GDJAX_CACHE_DIR/jax-cache``, else ``$XDG_CACHE_HOME/gdjax/jax-cache``, else
``~/.cache/gdjax/jax-cache``), so a second run of the same command loads its
programs instead of compiling them again. Every parser made by :func:`parser`
takes ``--no-compile-cache`` to run without it (so does
``GDJAX_COMPILE_CACHE=0`` in the environment). Only scripts turn the cache on:
the library never does, and neither does calling a script's ``main`` directly
(as tests do).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "parser",
    "add_model_options",
    "add_data_option",
    "add_precision_option",
    "add_progress_option",
    "add_output_options",
    "parse_hidden",
    "compile_cache_dir",
    "enable_compile_cache",
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
    whose ``--help`` shows every option's default.

    It takes ``--no-compile-cache``; when the script runs through :func:`run`,
    parsing its arguments turns JAX's persistent compilation cache on
    (:func:`enable_compile_cache`) unless that flag is given.
    """
    p = _Parser(
        description=doc.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile everything afresh: keep nothing in the persistent compilation cache "
        "($GDJAX_CACHE_DIR/jax-cache, else ~/.cache/gdjax/jax-cache)",
    )
    return p


class _Parser(argparse.ArgumentParser):
    """Turns the compilation cache on after parsing, in a script run by :func:`run`."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if _running and not getattr(parsed, "no_compile_cache", True):
            if os.environ.get(COMPILE_CACHE_ENV, "").strip().lower() not in _OFF:
                enable_compile_cache()
        return parsed, extras


COMPILE_CACHE_ENV = "GDJAX_COMPILE_CACHE"
"""Set to ``0`` (or ``off``, ``false``, ``no``) to keep the scripts' compilation cache off."""

_OFF = ("0", "off", "false", "no")
_running = False  # True while run() runs a script's main


def compile_cache_dir() -> Path:
    """Where the scripts keep compiled programs: ``jax-cache`` in
    :func:`gdjax.data.default_cache_dir` (``$GDJAX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/gdjax``, else ``~/.cache/gdjax``).

    >>> compile_cache_dir().name
    'jax-cache'
    """
    from gdjax.data import default_cache_dir

    return default_cache_dir() / "jax-cache"


def enable_compile_cache(path: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`compile_cache_dir`).

    Every compiled program is kept, however small or quick to compile
    (``jax_persistent_cache_min_compile_time_secs = 0``,
    ``jax_persistent_cache_min_entry_size_bytes = 0``): the scripts' programs
    are small CPU programs whose compile time is what the cache saves. Call it
    before anything compiles; JAX reads the directory at its first compile.

    Returns:
      The cache directory.
    """
    import jax

    path = Path(path) if path is not None else compile_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


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

    While ``main`` runs, parsing its arguments with a :func:`parser` turns the
    persistent compilation cache on (unless ``--no-compile-cache``).

    Use as ``sys.exit(cli.run(main))`` at the bottom of a script.
    """
    global _running
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _running = True
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"\n{interruption_message()}", file=sys.stderr)
        return EXIT_SIGINT
    except _Terminated:
        print(f"\n{interruption_message()}", file=sys.stderr)
        return EXIT_SIGTERM
    finally:
        _running = False
        signal.signal(signal.SIGTERM, previous)
