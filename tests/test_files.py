"""Files gdjax writes: the mode follows the umask, and concurrent writers do not collide.

Every file goes through ``runs.atomic_write_bytes`` (JSON, NPZ, figures); its
temporary file is created with mode 0o666, so the result is ``0o666 & ~umask``
like any file made by ``open()`` (mkstemp's 0o600 made data files unreadable to
colleagues in a shared results directory while figures were 0644).
"""

import os
import stat
import threading

import jax
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from gdjax import MLP, plots, runs

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _figure(seed: int = 0) -> Figure:
    fig = Figure(figsize=(3, 2))
    fig.subplots().plot(np.random.default_rng(seed).normal(size=50))
    return fig


def _write_json(directory):
    return [runs.atomic_write_json(directory / "a.json", {"x": 1})]


def _write_npz(directory):
    return [runs.save_pytree(directory / "a.npz", {"w": np.ones(3)})]


def _write_figure(directory):
    return [plots.save(_figure(), directory / "a.png")]


def _write_run(directory):
    model = MLP((2, 3, 1))
    run_dir = directory / "run"
    runs.save_run(
        run_dir,
        model=model,
        config={"loss": "mse"},
        params=model.init(jax.random.key(0)),
        history={"loss": np.ones(2)},
    )
    # the version directory's files, and the links to them (stat follows the link)
    return sorted(p for p in run_dir.rglob("*") if p.is_file())


WRITERS = [
    pytest.param(_write_json, id="json"),
    pytest.param(_write_npz, id="npz"),
    pytest.param(_write_figure, id="figure"),
    pytest.param(_write_run, id="run-directory"),
]

UMASKS = [
    pytest.param(0o022, 0o644, id="022"),
    pytest.param(0o077, 0o600, id="077"),
    pytest.param(0o002, 0o664, id="002"),
]


@pytest.fixture
def set_umask():
    """Set the process umask for the test, restoring the old one afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("umask, mode", UMASKS)
@pytest.mark.parametrize("write", WRITERS)
def test_written_files_follow_the_umask(tmp_path, set_umask, write, umask, mode):
    set_umask(umask)
    written = write(tmp_path)
    assert written
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
        # the mode open() gives a new file under the same umask
        reference = path.with_name(f"open-{path.name}")
        reference.write_bytes(b"")
        assert stat.S_IMODE(reference.stat().st_mode) == mode
        reference.unlink()


def test_concurrent_saves_of_one_figure_all_succeed(tmp_path, monkeypatch):
    """Writers of the same figure each use their own temporary file: no FileNotFoundError.

    ``os.replace`` waits until every writer has written its file, so the writers
    overlap the way two processes saving one figure can: with one fixed
    temporary name, the first rename took the file the second then renamed.
    """
    path = tmp_path / "landscape_2d.png"
    n = 3
    all_written = threading.Barrier(n, timeout=30)
    replace = os.replace

    def replace_when_all_have_written(src, dst):
        all_written.wait()
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_when_all_have_written)
    errors: list[BaseException] = []

    def save(fig):
        try:
            plots.save(fig, path)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=save, args=(_figure(seed),)) for seed in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).ndim == 3  # decodes whole: one writer's file
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


@pytest.mark.parametrize("name", ["figure", "figure.xyz"])
def test_save_names_an_unknown_format(tmp_path, name):
    with pytest.raises(ValueError, match=r"^path: expected a file name ending in one of .*\.png"):
        plots.save(_figure(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
