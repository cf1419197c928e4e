"""Run directories: everything a training run produced, in files that outlive it.

A run directory holds (format version 2)::

    current -> saves/<version>   the link naming the run's committed version (the switch-over)
    saves/<version>/config.json  everything needed to rerun it: {"model": {...}, **config}
    saves/<version>/params.npz   the final params, bit for bit
    saves/<version>/opt_state.npz  the optimizer state (only when one was saved)
    saves/<version>/history.npz  the recorded history: a dict of arrays, e.g. {"loss": (steps,)}
    saves/<version>/meta.json    versions (gdjax, jax, jaxlib, optax, numpy, python), platform,
                                 devices, creation time, caller extras (e.g. wall time), the
                                 size and SHA-256 of config.json and each .npz file, and the
                                 SHA-256 of its own contents (manifest_sha256)
    config.json, params.npz, …   links through ``current``, for readers
    .gdjax.lock                  while a process writes the directory: who it is

A save is all-or-nothing: the new version is written beside the old one,
every file fsync'ed, and only then does ``current`` switch to it (one atomic
rename); the old version is removed after. A save that fails at any byte (a
full disk, a kill) leaves the previous run loadable and unchanged; the next
save removes what it left. :func:`load_run` verifies every file against
meta.json, and meta.json against its own checksum, and refuses a mismatch
with a message naming the file. Directories of format version 1 (the files
directly in the directory, meta.json covering the .npz files only) still load.

Single files are written atomically: to a uniquely named temporary file in the
same directory, flushed and fsync'ed, then renamed over the final name with
``os.replace``, so a reader sees the old file or the new one, never a partial
one, and two processes writing the same file do not collide. Files get the
mode ``open()`` would give a new file (0o666 less the umask: 0644 under the
usual umask 022), so others can read a shared results directory. A directory
being written is locked (:func:`lock`): a second writer is told which process
holds it.

The ``.npz`` files (see :func:`save_pytree`) hold plain arrays only and are
read with ``allow_pickle=False``: loading a run never executes code from it.
Scripts that analyse a trained network (landscape, curvature) take a run
directory as input::

    run = runs.load(path)
    run.model.apply(run.params, x)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import activations
from gdjax.activations import Activation
from gdjax.mlp import MLP, Params

__all__ = [
    "Run",
    "save_run",
    "load_run",
    "load",
    "new_run_dir",
    "model_to_dict",
    "model_from_dict",
    "save_pytree",
    "load_pytree",
    "atomic_write_bytes",
    "atomic_write_json",
    "RUN_FILES",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "check_run_dir",
    "lock",
    "DirectoryLock",
    "DirectoryInUseError",
    "LOCK_FILE",
]

PyTree = Any

FORMAT = "gdjax.run"
FORMAT_VERSION = 2
PYTREE_FORMAT = "gdjax.pytree"
PYTREE_VERSION = 1

CONFIG_FILE = "config.json"
META_FILE = "meta.json"
PARAMS_FILE = "params.npz"
OPT_STATE_FILE = "opt_state.npz"
HISTORY_FILE = "history.npz"

RUN_FILES = (CONFIG_FILE, PARAMS_FILE, HISTORY_FILE, META_FILE)
"""The files every run must contain (``opt_state.npz`` is optional)."""

CURRENT_LINK = "current"
"""The link naming the run's committed version directory (format version 2)."""
SAVES_DIR = "saves"
"""The directory of version directories (format version 2)."""
_VERSIONED_FILES = (CONFIG_FILE, PARAMS_FILE, OPT_STATE_FILE, HISTORY_FILE)

_RUN_CONTENTS = (
    "A run directory, as written by gdjax.runs.save_run, contains config.json, params.npz, "
    "history.npz and meta.json (and opt_state.npz when an optimizer state was saved)."
)

_TREE_KEY = "__tree__"

_META_KEYS = (  # written by save_run itself; meta_extra may not override them
    "format",
    "format_version",
    "created",
    "versions",
    "platform",
    "default_backend",
    "x64",
    "process_count",
    "devices",
    "files",
)

_NEEDS_TEMPLATE = (
    "like: {path} holds a pytree with a {node} node, which cannot be rebuilt from the file "
    "alone. Pass a template with the same structure, e.g. "
    "load_pytree(path, like=optimizer.init(params)) for an optax state."
)


# ---------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a uniquely named temporary file in the same directory (so
    the rename does not cross file systems, and concurrent writers of the same
    ``path`` each have their own), which is flushed, fsync'ed and renamed over
    ``path`` with ``os.replace``: the last writer wins, whole. The file's mode
    is that of a new file made by ``open()``, ``0o666 & ~umask``. If anything
    fails, the temporary file is removed and an existing ``path`` is left
    untouched.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"data: expected bytes, got {type(data).__name__}.")
    fd, tmp = _create_temporary(path)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` with ``os.write`` (a full disk raises OSError)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` (which must not exist) and fsync it.

    For files no reader looks at yet: those of a save's new version directory
    (no temporary name is needed there) and a temporary name itself.
    """
    fd = os.open(path, _TEMPORARY_FLAGS, 0o666)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


_LEFTOVER_RE = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
"""The names :func:`_create_temporary` gives: a killed writer leaves such files behind."""


def _remove_leftovers(directory: Path) -> list[Path]:
    """Remove the temporary files of writers killed in ``directory``; return them.

    Only call while holding the directory's :func:`lock`, so that no live
    writer's temporary file is taken.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if _LEFTOVER_RE.match(entry.name) and not entry.is_dir(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(Path(entry.path))
    return removed


_TEMPORARY_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, open for writing.

    Unlike ``tempfile.mkstemp``, which creates its file with mode 0o600, it is
    created with mode 0o666, so the kernel applies the umask (and any default
    ACL of the directory) exactly as for ``open(path, "wb")``. ``O_EXCL`` makes
    the name this caller's alone.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, _TEMPORARY_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"path: no free temporary name beside {path} after 100 tries.")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- paths and locks


def check_run_dir(path: Any, name: str = "run_dir") -> Path:
    """``path`` as a :class:`~pathlib.Path`, checked to be usable as a directory to write.

    Creates nothing. ``path`` may not exist yet; where it exists it must be a
    directory, and its nearest existing ancestor must be a directory too (so
    ``mkdir(parents=True)`` cannot fail on a file in the way).

    Raises:
      TypeError: ``path`` is not a ``str`` or ``os.PathLike``.
      ValueError: ``path`` or one of its ancestors is an existing file.

    >>> check_run_dir(3)
    Traceback (most recent call last):
    ...
    TypeError: run_dir: expected a directory path (str or os.PathLike), got int 3.
    """
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{name}: expected a directory path (str or os.PathLike), got "
            f"{type(path).__name__} {path!r}."
        )
    path = Path(path)
    if os.fspath(path) == "":
        raise ValueError(f"{name}: expected a directory path, got an empty string.")
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is" if candidate == path else f"is inside {candidate}, which is"
                raise ValueError(
                    f"{name}: expected a directory (new or existing), got {path}, which "
                    f"{where} a file. Pass a directory path."
                )
            break
    return path


LOCK_FILE = ".gdjax.lock"
"""The lock file of a directory being written: it names the process that holds it."""


class DirectoryInUseError(RuntimeError):
    """Another process holds the lock of the directory that was to be written."""


try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: O_EXCL lock files with a pid check
    _fcntl = None

_held: dict[str, list] = {}  # realpath -> [fd, count]: reentrant within one process
_held_guard = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def _read_holder(lock_path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(lock_path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_text(holder: Mapping[str, Any]) -> str:
    if not holder:
        return "another process"
    text = f"process {holder.get('pid')} on host {holder.get('host')!r}"
    if holder.get("since"):
        text += f" (since {holder['since']}"
        text += f": {holder['command']})" if holder.get("command") else ")"
    return text


class DirectoryLock:
    """The lock of a directory while this process writes it; see :func:`lock`.

    Use as a context manager, or call :meth:`release` once done. Reentrant
    within a process: a script that holds its run directory can call
    :func:`save_run` and :func:`gdjax.train.fit` on it, which lock it again.
    """

    def __init__(self, directory: Path, key: str) -> None:
        self.directory, self._key = directory, key
        self._released = False

    @property
    def path(self) -> Path:
        return self.directory / LOCK_FILE

    def release(self) -> None:
        """Release this hold; the lock file goes when the process's last hold is released."""
        with _held_guard:
            if self._released:
                return
            self._released = True
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self._key]
            try:
                os.unlink(self.path)  # still holding it: a waiter re-checks the inode
            except OSError:
                pass
            os.close(entry[0])

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock(directory: str | os.PathLike, *, name: str = "run_dir") -> DirectoryLock:
    """Take the write lock of ``directory`` (created if missing) for this process.

    The lock is the file ``directory/.gdjax.lock``, which names the process
    holding it (pid, host, start time, command line) and is locked with
    ``flock``; it is removed on release. A second process asking for it gets a
    :class:`DirectoryInUseError` naming the holder. A lock file left by a
    process that died (killed, or its machine rebooted) holds no ``flock``
    any more and is taken over. The same process may take the lock again
    (it is counted), e.g. ``save_run`` inside a script that holds its run
    directory. ``flock`` works on local file systems and NFSv4; on systems
    without ``fcntl`` (Windows) the file is created exclusively and a lock of
    a pid no longer alive on this host is taken over.

    Args:
      directory: the directory to write.
      name: the argument name to use in error messages.

    Returns:
      A :class:`DirectoryLock`, to release (or use as a context manager).

    Raises:
      DirectoryInUseError: another live process holds the lock.
    """
    directory = check_run_dir(directory, name)
    directory.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(directory)
    lock_path = directory / LOCK_FILE
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            return DirectoryLock(directory, key)
        fd = _acquire(lock_path, name)
        info = {
            "pid": os.getpid(),
            "host": platform.node(),
            "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            _write_all(fd, (json.dumps(info) + "\n").encode())
        except BaseException:  # e.g. a full disk: give the lock back whole
            try:
                os.unlink(lock_path)
            except OSError:
                pass
            os.close(fd)
            raise
        _held[key] = [fd, 1]
    return DirectoryLock(directory, key)


def _in_use(lock_path: Path, name: str, holder: Mapping[str, Any]) -> DirectoryInUseError:
    return DirectoryInUseError(
        f"{name}: {lock_path.parent} is in use: {_holder_text(holder)} is writing it. Wait "
        f"for it to finish, or use another directory. (If that process is gone, delete "
        f"{lock_path}.)"
    )


def _acquire(lock_path: Path, name: str) -> int:
    """An fd holding the lock of ``lock_path``'s directory (see :func:`lock`)."""
    for _ in range(100):
        if _fcntl is None:  # pragma: no cover - Windows
            try:
                return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = _read_holder(lock_path)
                stale = holder.get("host") == platform.node() and not _pid_alive(
                    int(holder.get("pid", -1))
                )
                if not stale:
                    raise _in_use(lock_path, name, holder) from None
                lock_path.unlink(missing_ok=True)
                continue
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(lock_path, name, _read_holder(lock_path)) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder may have removed the file between our open and our flock
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise DirectoryInUseError(f"{name}: could not take the lock {lock_path} after 100 tries.")


def _to_json(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy / JAX scalars and arrays become numbers and lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | jax.Array):
        return np.asarray(obj).tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(name: str, obj: Any) -> bytes:
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_to_json)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name}: expected JSON-serialisable values (dict, list, str, int, float, bool, "
            f"None, numpy or JAX scalars and arrays), got an object that is not: {e}."
        ) from None
    return (text + "\n").encode()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically.

    Numpy and JAX scalars and arrays are written as numbers and nested lists,
    tuples as lists. Raises ``ValueError`` (and writes nothing) when ``obj``
    holds something JSON cannot represent.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = atomic_write_json(pathlib.Path(d) / "a.json", {"lr": np.float32(0.5)})
    ...     json.loads(p.read_text())
    {'lr': 0.5}
    """
    return atomic_write_bytes(path, _dumps("obj", obj))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path}: expected a JSON file, got invalid JSON ({e}): the file is truncated or "
            f"corrupted."
        ) from None


_SELF_SHA256 = "manifest_sha256"
"""The key of a manifest holding the SHA-256 of its own canonical contents."""


def _canonical_sha256(obj: Mapping[str, Any]) -> str:
    """SHA-256 of ``obj`` without its ``manifest_sha256`` key, as compact key-sorted JSON."""
    body = {k: v for k, v in obj.items() if k != _SELF_SHA256}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _sealed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as JSON values, with ``manifest_sha256``: the hash of its own contents."""
    plain = json.loads(_dumps("manifest", dict(obj)))
    return {**plain, _SELF_SHA256: _canonical_sha256(plain)}


def _check_sealed(path: Path, obj: Any, required: bool) -> None:
    """Refuse a manifest whose contents no longer match its ``manifest_sha256``."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}.")
    if _SELF_SHA256 not in obj:
        if required:
            raise ValueError(
                f"{path}: expected a '{_SELF_SHA256}' entry (the checksum of the file's own "
                f"contents), got none: the file was edited or replaced."
            )
        return  # written before manifests carried their own checksum
    if obj[_SELF_SHA256] != _canonical_sha256(obj):
        raise ValueError(
            f"{path}: expected contents matching the checksum recorded in it "
            f"('{_SELF_SHA256}'), got different contents: the file was edited or corrupted. "
            f"Nothing was loaded."
        )


# ---------------------------------------------------------------- models


def _activation_name(field: str, act: Activation) -> str:
    name = act.name
    if name not in activations.names() or activations.get(name) != act:
        raise ValueError(
            f"model.{field}: expected a built-in activation ({', '.join(activations.names())}) "
            f"so the run can be reloaded by name, got a custom Activation {name!r}. Run "
            f"directories store activations by name; save the model's params with "
            f"save_pytree and rebuild the model in code instead."
        )
    return name


def model_to_dict(model: MLP) -> dict[str, Any]:
    """The JSON description of ``model``: its sizes and activation names.

    >>> model_to_dict(MLP(sizes=(2, 16, 1), activation="tanh"))
    {'sizes': [2, 16, 1], 'activation': 'tanh', 'output_activation': 'identity'}
    """
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a gdjax.MLP, got {type(model).__name__}.")
    return {
        "sizes": list(model.sizes),
        "activation": _activation_name("activation", model.activation),
        "output_activation": _activation_name("output_activation", model.output_activation),
    }


def model_from_dict(d: Mapping[str, Any]) -> MLP:
    """The :class:`~gdjax.MLP` described by ``d``, the inverse of :func:`model_to_dict`.

    >>> model_from_dict({"sizes": [2, 16, 1], "activation": "tanh"}) == MLP((2, 16, 1), "tanh")
    True
    """
    if not isinstance(d, Mapping) or "sizes" not in d:
        got = f"keys {sorted(d)}" if isinstance(d, Mapping) else type(d).__name__
        raise ValueError(
            f"d: expected a dict with keys 'sizes', 'activation' and 'output_activation' "
            f"(as written by model_to_dict), got {got}."
        )
    unknown = set(d) - {"sizes", "activation", "output_activation"}
    if unknown:
        raise ValueError(
            f"d: expected only the keys 'sizes', 'activation' and 'output_activation', "
            f"got also {sorted(unknown)}."
        )
    return MLP(
        sizes=d["sizes"],
        activation=d.get("activation", "sigmoid"),
        output_activation=d.get("output_activation", "identity"),
    )


# ---------------------------------------------------------------- pytrees as .npz


class _NotAPytree(Exception):
    """An .npz file without the ``__tree__`` header."""


class _Opaque(Exception):
    """A pytree node that the structure description cannot express."""


def _describe(node: Any) -> Any:
    """A JSON description of ``node``'s structure (dicts with str keys, lists, tuples, None)."""
    if node is None:
        return {"none": None}
    if isinstance(node, dict):
        if not all(isinstance(k, str) for k in node):
            raise _Opaque("dict with non-string keys")
        return {"dict": {k: _describe(v) for k, v in node.items()}}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        raise _Opaque(type(node).__name__)
    if type(node) in (list, tuple):
        return {type(node).__name__: [_describe(v) for v in node]}
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(node)):
        return {"leaf": None}
    raise _Opaque(type(node).__name__)


def _skeleton(desc: Any) -> Any:
    """A pytree with the described structure and 0 at every leaf."""
    ((kind, body),) = desc.items()
    if kind == "none":
        return None
    if kind == "leaf":
        return 0
    if kind == "dict":
        return {k: _skeleton(v) for k, v in body.items()}
    if kind in ("list", "tuple"):
        children = [_skeleton(v) for v in body]
        return children if kind == "list" else tuple(children)
    raise ValueError(f"unknown node kind {kind!r} in a stored pytree structure.")


def _is_key_array(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def save_pytree(path: str | os.PathLike, tree: PyTree) -> Path:
    """Save the arrays of ``tree`` to the ``.npz`` file ``path``, atomically and exactly.

    Layout: leaf ``i`` of ``jax.tree.leaves(tree)`` is the array ``leaf_i``,
    stored with its dtype and bits unchanged (bfloat16 included; typed PRNG
    keys as their key data). The entry ``__tree__`` is a JSON string with the
    ``jax.tree_util.keystr`` path, dtype, shape and SHA-256 of every leaf, and the
    structure of the tree when it is made of dicts (string keys), lists,
    tuples and None only, so such trees (params, histories) load without a
    template. Other nodes, such as the NamedTuple states of optax, are
    recorded by name and need a template at load time.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, _pytree_bytes(tree))


def _pytree_bytes(tree: PyTree) -> bytes:
    """The ``.npz`` bytes :func:`save_pytree` writes (see there for the layout)."""
    tree = jax.device_get(tree)
    path_leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    try:
        structure, opaque = _describe(tree), None
    except _Opaque as e:
        structure, opaque = None, str(e)
    arrays: dict[str, np.ndarray] = {}
    leaves_meta = []
    for i, (key_path, leaf) in enumerate(path_leaves):
        entry: dict[str, Any] = {"path": jax.tree_util.keystr(key_path)}
        if _is_key_array(leaf):
            entry["prng_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        arr = np.asarray(leaf)
        if arr.dtype.kind in "OUS" or arr.dtype.type is np.void:  # ml_dtypes: kind V, not void
            raise ValueError(
                f"tree: expected numeric or boolean array leaves (a .npz holds arrays only, "
                f"read without pickle), got leaf {entry['path'] or '(root)'} of type "
                f"{type(leaf).__name__} with dtype {arr.dtype}. Keep strings and other "
                f"objects in a JSON config instead."
            )
        entry.update(dtype=arr.dtype.name, shape=list(arr.shape), sha256=_array_sha256(arr))
        arrays[f"leaf_{i}"] = arr
        leaves_meta.append(entry)
    header = {
        "format": PYTREE_FORMAT,
        "version": PYTREE_VERSION,
        "structure": structure,
        "opaque_node": opaque,
        "leaves": leaves_meta,
    }
    arrays[_TREE_KEY] = np.array(json.dumps(header))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _array_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def load_pytree(
    path: str | os.PathLike, like: PyTree | None = None, *, as_numpy: bool = False
) -> PyTree:
    """Load a pytree written by :func:`save_pytree`, bit for bit.

    Args:
      path: the ``.npz`` file.
      like: optional template with the structure to rebuild (arrays or
        ``jax.ShapeDtypeStruct`` leaves; only its structure, leaf paths and
        shapes are used). Required when the saved tree has nodes other than
        dicts, lists, tuples and None, e.g. ``like=optimizer.init(params)``
        (or ``jax.eval_shape(optimizer.init, params)``) for an optax state.
      as_numpy: return numpy arrays instead of JAX arrays (typed PRNG keys
        are always JAX arrays).

    Returns:
      The tree, each leaf with its saved dtype and values. As JAX arrays,
      float64 leaves stay float64 only when ``jax_enable_x64`` is on.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not a gdjax pytree, is truncated or corrupted (the
        zip CRCs and the SHA-256 of every leaf, recorded at save time, are
        checked before anything is returned), or ``like`` does not match it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: expected a .npz file written by save_pytree, got {path}.")
    try:  # our own handle: np.load leaks its file when the zip is unreadable
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            if _TREE_KEY not in npz.files:
                raise _NotAPytree(sorted(npz.files)[:5])
            header = json.loads(str(npz[_TREE_KEY][()]))
            raw = [npz[f"leaf_{i}"] for i in range(len(header["leaves"]))]
    except _NotAPytree as e:
        raise ValueError(
            f"path: expected a .npz file written by gdjax.runs.save_pytree (with a "
            f"'{_TREE_KEY}' entry), got {path} with entries {e.args[0]}."
        ) from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, KeyError, JSON, …
        raise ValueError(
            f"path: expected a readable .npz file written by gdjax.runs.save_pytree, got "
            f"{path}, which is truncated or corrupted ({type(e).__name__}: {e}). Nothing "
            f"was loaded from it."
        ) from None
    for i, (arr, entry) in enumerate(zip(raw, header["leaves"], strict=True)):
        if "sha256" in entry and _array_sha256(arr) != entry["sha256"]:  # absent: older files
            raise ValueError(
                f"path: expected leaf {i} ({entry['path']}) of {path} to have the SHA-256 "
                f"recorded when it was saved, got different bytes: the file is corrupted. "
                f"Nothing was loaded from it."
            )

    leaves = []
    for arr, entry in zip(raw, header["leaves"], strict=True):
        dtype = np.dtype(jnp.dtype(entry["dtype"]))
        if arr.dtype != dtype:  # extension dtypes such as bfloat16 come back as raw void
            arr = arr.view(dtype)
        if "prng_impl" in entry:
            leaf = jax.random.wrap_key_data(arr, impl=entry["prng_impl"])
        elif as_numpy:
            leaf = arr
        else:
            leaf = jnp.asarray(arr)
        leaves.append(leaf)

    if like is None:
        if header["structure"] is None:
            raise ValueError(_NEEDS_TEMPLATE.format(path=path, node=header["opaque_node"]))
        treedef = jax.tree.structure(_skeleton(header["structure"]))
        return jax.tree.unflatten(treedef, leaves)

    like_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    want = [jax.tree_util.keystr(p) for p, _ in like_leaves]
    got = [entry["path"] for entry in header["leaves"]]
    if want != got:
        pairs = enumerate(zip(want, got, strict=False))
        diff = next(
            (f"leaf {i}: template {w!r}, file {g!r}" for i, (w, g) in pairs if w != g),
            f"template has {len(want)} leaves, file {len(got)}",
        )
        raise ValueError(
            f"like: expected a template with the structure stored in {path}, got a different "
            f"one ({diff}). Build the template from the same optimizer and params shapes."
        )
    for (key_path, t), entry in zip(like_leaves, header["leaves"], strict=True):
        shape = tuple(np.shape(t))
        if shape != tuple(entry["shape"]):
            raise ValueError(
                f"like: expected leaf {jax.tree_util.keystr(key_path)} of shape "
                f"{tuple(entry['shape'])} as stored in {path}, got {shape} in the template."
            )
    return jax.tree.unflatten(treedef, leaves)


# ---------------------------------------------------------------- run directories


class Run(NamedTuple):
    """A loaded run directory.

    Attributes:
      path: the directory.
      model: the :class:`~gdjax.MLP` rebuilt from ``config["model"]``.
      params: the saved params (JAX arrays).
      history: the saved history, a dict of numpy arrays (``{}`` if none was saved).
      config: the contents of ``config.json``.
      meta: the contents of ``meta.json``.
      opt_state: the optimizer state when a template or optimizer was given to
        :func:`load_run`, else ``None``.
    """

    path: Path
    model: MLP
    params: Params
    history: dict[str, Any]
    config: dict[str, Any]
    meta: dict[str, Any]
    opt_state: PyTree = None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _environment() -> dict[str, Any]:
    import gdjax

    return {
        "versions": {
            "gdjax": gdjax.__version__,
            "jax": jax.__version__,
            "jaxlib": _version("jaxlib"),
            "optax": _version("optax"),
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "platform": platform.platform(),
        "default_backend": jax.default_backend(),
        "x64": bool(jax.config.read("jax_enable_x64")),
        "process_count": jax.process_count(),
        "devices": [
            {
                "id": d.id,
                "platform": d.platform,
                "kind": d.device_kind,
                "process_index": d.process_index,
            }
            for d in jax.devices()
        ],
    }


def _history_arrays(history: Mapping[str, Any], where: str = "history") -> dict[str, Any]:
    """``history`` with every list or tuple turned into one array (dicts may nest)."""
    out = {}
    for k, v in history.items():
        if isinstance(v, Mapping):
            out[k] = _history_arrays(v, f"{where}[{k!r}]")
        elif isinstance(v, list | tuple):
            try:
                out[k] = np.asarray(v)
            except ValueError as e:
                raise ValueError(
                    f"{where}[{k!r}]: expected an array or a list of equal-shaped values, "
                    f"got a ragged list ({e})."
                ) from None
        else:
            out[k] = v
    return out


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def save_run(
    path: str | os.PathLike,
    *,
    model: MLP,
    config: Mapping[str, Any],
    params: Params,
    opt_state: PyTree | None = None,
    history: Mapping[str, Any] | None = None,
    meta_extra: Mapping[str, Any] | None = None,
    members: int | None = None,
) -> Path:
    """Write a run directory (created if missing; existing run files are replaced).

    The files are written into a new version directory beside the previous
    one (see the module docstring) and synced, then the ``current`` link is
    switched to it in one atomic step, then the previous version is removed:
    a save that fails at any point leaves the previous run loadable and
    unchanged. meta.json records the size and SHA-256 of config.json and every
    .npz file, and its own checksum. The directory is locked (:func:`lock`)
    while it is written.

    Args:
      path: the run directory, e.g. from :func:`new_run_dir`.
      model: the network; stored as ``config["model"]`` = :func:`model_to_dict`.
      config: everything else needed to rerun: loss name, optimizer and its
        hyper-parameters, data, seed, number of steps… (JSON-serialisable).
      params: the final params, ``[{"w", "b"}, …]`` matching ``model``.
      opt_state: the optimizer state, any pytree of arrays (optional).
      history: a dict of arrays, e.g. ``{"loss": (steps,), "grad_norm": (steps, L)}``;
        nested dicts are allowed.
      meta_extra: added to meta.json, e.g. ``{"wall_time_s": 12.3, "steps_done": 1000}``.
      members: for a population (:func:`gdjax.train.fit_population`), its size
        P: every params leaf then has a leading member axis of size P, and
        ``config["members"]`` records P.

    Returns:
      The directory as a :class:`~pathlib.Path`.

    Examples:
      >>> import tempfile
      >>> model = MLP(sizes=(2, 4, 1), activation="tanh")
      >>> params = model.init(jax.random.key(0))
      >>> with tempfile.TemporaryDirectory() as d:
      ...     _ = save_run(d, model=model, config={"loss": "mse", "seed": 0}, params=params,
      ...                  history={"loss": np.array([0.5, 0.25])})
      ...     run = load_run(d)
      ...     run.model == model, run.config["loss"], run.history["loss"].tolist()
      (True, 'mse', [0.5, 0.25])
    """
    path = check_run_dir(path, "path")
    model_dict = model_to_dict(model)  # fails on a custom activation before anything is written
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a dict, got {type(config).__name__}.")
    if members is not None:
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"members: expected None or a positive integer, got {members!r}.")
        if config.get("members", members) != members:
            raise ValueError(
                f"config: expected 'members' equal to members={members} or absent, got "
                f"{config['members']!r}."
            )
        config = {**config, "members": members}
    _check_params(model, params, config.get("members"))
    if "model" in config and config["model"] != model_dict:
        raise ValueError(
            f"config: expected no 'model' key (save_run writes model_to_dict(model) there) or "
            f"one equal to {model_dict}, got {config['model']!r}."
        )
    if history is None:
        history = {}
    if not isinstance(history, Mapping):
        raise ValueError(
            f"history: expected a dict of arrays like {{'loss': (steps,)}}, "
            f"got {type(history).__name__}."
        )
    history = _history_arrays(history)
    meta_extra = dict(meta_extra or {})
    clash = sorted(set(_META_KEYS) & set(meta_extra))
    if clash:
        raise ValueError(
            f"meta_extra: expected keys other than those save_run writes itself "
            f"({', '.join(_META_KEYS)}), got {clash}."
        )
    config_bytes = _dumps("config", {**config, "model": model_dict})
    _dumps("meta_extra", meta_extra)

    contents = {CONFIG_FILE: config_bytes, PARAMS_FILE: _pytree_bytes(params)}
    if opt_state is not None:
        contents[OPT_STATE_FILE] = _pytree_bytes(opt_state)
    contents[HISTORY_FILE] = _pytree_bytes(history)

    with lock(path, name="path"):
        _remove_leftovers(path)
        saves = path / SAVES_DIR
        saves.mkdir(exist_ok=True)
        current = _current_version(path)
        for old in saves.iterdir():  # half-written versions of killed saves
            if old.name != current and old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
        version = saves / f"{stamp}-{secrets.token_hex(4)}"
        version.mkdir()
        try:
            for name, data in contents.items():
                _write_new(version / name, data)
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                **_environment(),
                "files": {
                    name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                    for name, data in contents.items()
                },
            }
            assert set(meta) == set(_META_KEYS)
            _write_new(version / META_FILE, _dumps("meta", _sealed({**meta, **meta_extra})))
            _fsync_dir(version)
            _fsync_dir(saves)
            _point(path / CURRENT_LINK, f"{SAVES_DIR}/{version.name}")  # the switch-over
        except BaseException:
            if _current_version(path) != version.name:
                shutil.rmtree(version, ignore_errors=True)
            raise
        _link_flat_names(path, contents)
        for old in saves.iterdir():
            if old != version and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return path


def _point(link: Path, target: str) -> None:
    """Make ``link`` name ``target`` in one atomic step (a symlink, else a small file)."""
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(8)}.tmp")
    try:
        try:
            os.symlink(target, tmp)
        except (OSError, NotImplementedError):  # no symlinks here: a pointer file
            _write_new(tmp, target.encode())
        os.replace(tmp, link)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(link.parent)


def _current_version(path: Path) -> str | None:
    """The name of the version directory ``path/current`` points to, or None."""
    link = path / CURRENT_LINK
    if link.is_symlink():
        target = os.readlink(link)
    elif link.is_file():
        target = link.read_text().strip()
    else:
        return None
    parts = Path(target).parts
    if len(parts) != 2 or parts[0] != SAVES_DIR or parts[1] in ("..", "."):
        raise ValueError(
            f"{link}: expected a link to {SAVES_DIR}/<version> (written by save_run), got "
            f"{target!r}: the file was edited or corrupted."
        )
    return parts[1]


def _link_flat_names(path: Path, contents: Mapping[str, bytes]) -> None:
    """``path/config.json`` etc. as links through ``current``, for readers of the directory."""
    for name in (*_VERSIONED_FILES, META_FILE):
        flat = path / name
        if name != META_FILE and name not in contents:
            if flat.is_symlink() or flat.is_file():
                flat.unlink()
            continue
        target = f"{CURRENT_LINK}/{name}"
        if flat.is_symlink() and os.readlink(flat) == target:
            continue
        if flat.is_dir() and not flat.is_symlink():
            continue
        tmp = path / f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            os.symlink(target, tmp)
        except (OSError, NotImplementedError):  # no symlinks: the files stay in the version
            if flat.is_file() and not flat.is_symlink():
                flat.unlink()  # an older layout's file, no longer the run's
            continue
        os.replace(tmp, flat)


def _check_params(model: MLP, params: PyTree, members: int | None) -> None:
    """``params`` fit ``model``; with ``members``, every leaf has a leading member axis."""
    if members is None:
        model.check_params(params)
        return
    shapes = [np.shape(leaf) for leaf in jax.tree.leaves(params)]
    bad = [shape for shape in shapes if not shape or shape[0] != members]
    if bad:
        raise ValueError(
            f"params: expected a leading member axis of size {members} (the population's) on "
            f"every leaf, got a leaf of shape {bad[0]}."
        )
    model.check_params(jax.tree.map(lambda a: a[0], params))


def load_run(
    path: str | os.PathLike,
    *,
    opt_state_like: PyTree | None = None,
    optimizer: Any = None,
    verify: bool = True,
) -> Run:
    """Load a run directory written by :func:`save_run`.

    Args:
      path: the run directory.
      opt_state_like: a template of the optimizer state, e.g.
        ``optimizer.init(params)``; the state is loaded into ``Run.opt_state``.
      optimizer: alternatively, the optax ``GradientTransformation`` used for
        the run; the template is ``jax.eval_shape(optimizer.init, params)``.
      verify: check meta.json against its own checksum, and config.json and each
        .npz file against the size and SHA-256 recorded in meta.json.

    Returns:
      A :class:`Run` with the model, params, history, config, meta and,
      when asked for, the optimizer state.

    Raises:
      FileNotFoundError: the directory or one of its files is missing.
      ValueError: the files are inconsistent (a save was interrupted, or a
        file was changed), or the params do not fit the model.
    """
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"path: expected a run directory (str or os.PathLike), got {type(path).__name__} "
            f"{path!r}."
        )
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"path: expected a run directory, got {path}, which "
            f"{'is not a directory' if path.exists() else 'does not exist'}. "
            f"{_RUN_CONTENTS}"
        )
    if opt_state_like is not None and optimizer is not None:
        raise ValueError(
            "optimizer: expected either opt_state_like or optimizer, got both. Pass one."
        )
    version = _current_version(path)
    files_dir = path if version is None else path / SAVES_DIR / version
    for name in RUN_FILES:
        if not (files_dir / name).is_file():
            raise FileNotFoundError(
                f"path: expected a run directory, got {path}, which has no "
                f"{(files_dir / name).relative_to(path)}. {_RUN_CONTENTS}"
            )
    meta = _read_json(files_dir / META_FILE)
    if verify:
        _check_sealed(files_dir / META_FILE, meta, required=version is not None)
    if not isinstance(meta, dict):
        raise ValueError(f"{files_dir / META_FILE}: expected a JSON object.")
    if verify:
        records = meta.get("files", {})
        if version is not None and CONFIG_FILE not in records:
            raise ValueError(
                f"{files_dir / META_FILE}: expected a record of {CONFIG_FILE}, got none."
            )
        for name, record in records.items():
            file = files_dir / name
            if not file.is_file():
                raise FileNotFoundError(
                    f"path: expected {name} in {files_dir}, as listed in meta.json, but it is "
                    f"missing."
                )
            if _file_record(file) != record:
                raise ValueError(
                    f"{file}: expected the file recorded in meta.json ({record['bytes']} bytes, "
                    f"sha256 {record['sha256'][:12]}…), got different contents. The save was "
                    f"interrupted or the file changed since; load with verify=False to "
                    f"read it anyway."
                )
        if version is not None:
            _check_flat_names(path, files_dir)
    config = _read_json(files_dir / CONFIG_FILE)
    if not isinstance(config, dict):
        raise ValueError(f"{files_dir / CONFIG_FILE}: expected a JSON object.")
    if "model" not in config:
        raise ValueError(
            f"{path / CONFIG_FILE}: expected a 'model' entry (written by save_run), "
            f"got keys {sorted(config)}."
        )
    model = model_from_dict(config["model"])
    params = load_pytree(files_dir / PARAMS_FILE)
    _check_params(model, params, config.get("members"))
    history = load_pytree(files_dir / HISTORY_FILE, as_numpy=True)

    opt_state = None
    if optimizer is not None:
        opt_state_like = jax.eval_shape(optimizer.init, params)
    if opt_state_like is not None:
        if not (files_dir / OPT_STATE_FILE).is_file():
            raise FileNotFoundError(
                f"opt_state_like: expected {path / OPT_STATE_FILE} to load the optimizer state "
                f"into, but the run was saved without one (save_run(..., opt_state=...))."
            )
        opt_state = load_pytree(files_dir / OPT_STATE_FILE, like=opt_state_like)
    return Run(path, model, params, history, config, meta, opt_state)


def _check_flat_names(path: Path, files_dir: Path) -> None:
    """Refuse a ``path/config.json`` (etc.) that is no longer the link save_run made and
    differs from the run's own file: an edit that replaced the link must not pass unseen."""
    for name in (*_VERSIONED_FILES, META_FILE):
        flat = path / name
        if flat.is_symlink() and os.readlink(flat) == f"{CURRENT_LINK}/{name}":
            continue
        if not flat.is_file():
            continue
        own = files_dir / name
        if not own.is_file() or flat.read_bytes() != own.read_bytes():
            raise ValueError(
                f"{flat}: expected the file recorded in meta.json (a link to "
                f"{CURRENT_LINK}/{name}), got different contents: the file was replaced or "
                f"edited. Delete it (the run's own copy is {own}), or load with verify=False."
            )


load = load_run
"""Alias of :func:`load_run`: ``gdjax.runs.load(path)``."""


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def new_run_dir(root: str | os.PathLike, name: str | None = None) -> Path:
    """Create and return a fresh directory ``root/YYYYmmdd-HHMMSS[-name][-k]``.

    The timestamp is local time; ``-k`` (k = 1, 2, …) is appended when the
    directory exists already, so two calls never return the same directory.
    ``root`` is created if missing.

    Args:
      root: the parent directory, e.g. ``"runs"``.
      name: optional label: letters, digits, ``.``, ``_`` and ``-``.
    """
    if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
        raise ValueError(
            f"name: expected a label of letters, digits, '.', '_' and '-' (no path "
            f"separators), got {name!r}."
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{name}" if name else "")
    for k in range(10_000):
        candidate = root / (base if k == 0 else f"{base}-{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"root: could not create a new run directory under {root}.")


# ---------------------------------------------------------------- checkpoints

CHECKPOINT_MANIFEST = "checkpoint.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = "gdjax.checkpoint"


class Checkpoint(NamedTuple):
    """A checkpoint read by :func:`load_checkpoint`.

    Attributes:
      step: the position it was taken at (for :func:`gdjax.train.fit`, the
        number of epochs done).
      trees: the saved pytrees by name (e.g. ``params``, ``opt_state``, ``history``).
      fingerprint: the description of the run that wrote it.
      info: the small JSON extras saved with it.
      path: the directory holding its files.
    """

    step: int
    trees: dict[str, PyTree]
    fingerprint: dict[str, Any]
    info: dict[str, Any]
    path: Path


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    step: int,
    trees: Mapping[str, PyTree],
    fingerprint: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint into ``run_dir``, so that a killed process loses nothing before it.

    Layout::

        run_dir/checkpoint.json                        the manifest (written last)
        run_dir/checkpoints/<step>-<random>/<name>.npz  one file per tree (save_pytree)

    Each tree is written into a new directory of its own, beside the previous
    checkpoint's, and synced; then the manifest — the step, the fingerprint,
    ``info``, the size and SHA-256 of every file, and the SHA-256 of its own
    contents (``manifest_sha256``) — replaces the previous one atomically: the
    switch-over. Only then are older checkpoint directories removed. A save
    that fails at any point (a full disk, a kill) leaves the previous
    checkpoint as it was; the next save removes what it left (temporary files,
    a half-written directory). The directory is locked (:func:`lock`) while
    the checkpoint is written.

    Args:
      run_dir: the directory (created if missing).
      step: a non-negative int, the position of the checkpoint.
      trees: name → pytree of arrays; names are file names (letters, digits,
        ``.``, ``_``, ``-``).
      fingerprint: JSON description of the run; :func:`load_checkpoint`
        returns it so the caller can refuse a checkpoint of another run.
      info: optional small JSON extras (e.g. a status message).

    Returns:
      The manifest's path.
    """
    run_dir = check_run_dir(run_dir)
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step: expected a non-negative integer, got {step!r}.")
    for name in trees:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(
                f"trees: expected names of letters, digits, '.', '_' and '-', got {name!r}."
            )
    fingerprint_bytes = _dumps("fingerprint", dict(fingerprint))
    info = dict(info or {})
    _dumps("info", info)
    contents = {f"{name}.npz": _pytree_bytes(tree) for name, tree in trees.items()}
    with lock(run_dir):
        _remove_leftovers(run_dir)
        parent = run_dir / CHECKPOINT_DIR
        parent.mkdir(parents=True, exist_ok=True)
        keep = _committed_checkpoint_dir(run_dir)
        for old in parent.iterdir():  # half-written checkpoints of killed saves
            if old != keep and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        directory = parent / f"{int(step):09d}-{secrets.token_hex(4)}"
        directory.mkdir()
        try:
            for name, data in contents.items():
                _write_new(directory / name, data)
            _fsync_dir(directory)
            _fsync_dir(parent)
            manifest = {
                "format": CHECKPOINT_FORMAT,
                "format_version": FORMAT_VERSION,
                "step": int(step),
                "dir": directory.relative_to(run_dir).as_posix(),
                "files": {
                    name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                    for name, data in contents.items()
                },
                "fingerprint": json.loads(fingerprint_bytes),
                "fingerprint_sha256": hashlib.sha256(fingerprint_bytes).hexdigest(),
                "info": info,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "process_count": jax.process_count(),
                "device_count": jax.device_count(),
            }
            path = atomic_write_json(run_dir / CHECKPOINT_MANIFEST, _sealed(manifest))
        except BaseException:
            if _committed_checkpoint_dir(run_dir) != directory:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        for old in parent.iterdir():  # older steps
            if old != directory and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return path


def _committed_checkpoint_dir(run_dir: Path) -> Path | None:
    """The directory the manifest names, or None (no manifest, or an unreadable one)."""
    try:
        manifest = json.loads((run_dir / CHECKPOINT_MANIFEST).read_bytes())
        return run_dir / manifest["dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(
    run_dir: str | os.PathLike, like: Mapping[str, PyTree | None] | None = None
) -> Checkpoint | None:
    """The checkpoint :func:`save_checkpoint` last completed in ``run_dir``, or ``None``.

    Every file is checked against the size and SHA-256 in the manifest before
    anything is loaded, so a truncated or altered checkpoint is refused with a
    ``ValueError``, never half-loaded.

    Args:
      run_dir: the directory.
      like: name → template for trees that need one (an optax state:
        ``{"opt_state": optimizer.init(params)}``); ``None`` or missing names
        load without a template.

    Returns:
      A :class:`Checkpoint`, or ``None`` when ``run_dir`` holds no manifest.
      Its ``"history"`` tree holds NumPy arrays of the dtypes saved; the other
      trees hold JAX arrays.
    """
    if isinstance(run_dir, bool) or not isinstance(run_dir, str | os.PathLike):
        raise TypeError(
            f"run_dir: expected a directory path (str or os.PathLike), got "
            f"{type(run_dir).__name__} {run_dir!r}."
        )
    run_dir = Path(run_dir)
    manifest_path = run_dir / CHECKPOINT_MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"run_dir: expected {manifest_path} to be a manifest written by "
            f"gdjax.runs.save_checkpoint, got another file. Move it away to start over."
        )
    _check_sealed(manifest_path, manifest, required=manifest.get("format_version", 1) >= 2)
    try:
        directory = run_dir / manifest["dir"]
        records = dict(manifest["files"])
        step, fingerprint, info = int(manifest["step"]), manifest["fingerprint"], manifest["info"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{manifest_path}: expected the entries save_checkpoint writes, got a manifest "
            f"without a valid {e}: the file is corrupted. Delete it to start over."
        ) from None
    for name, record in records.items():
        file = directory / name
        if not file.is_file():
            raise ValueError(
                f"run_dir: expected {file}, listed in {manifest_path}, but it is missing: the "
                f"checkpoint is incomplete. Delete {manifest_path} to start over."
            )
        if _file_record(file) != record:
            raise ValueError(
                f"run_dir: expected {file} to match {manifest_path} ({record['bytes']} bytes, "
                f"sha256 {record['sha256'][:12]}…), got different contents: the checkpoint "
                f"is corrupted. Nothing was loaded. Delete {manifest_path} to start over."
            )
    like = dict(like or {})
    trees = {}
    for name in records:
        key = name.removesuffix(".npz")
        # the history comes back as saved (NumPy, float64/int64 even with x64 off)
        as_numpy = key == "history"
        trees[key] = load_pytree(directory / name, like=like.get(key), as_numpy=as_numpy)
    return Checkpoint(step, trees, fingerprint, info, directory)
