"""The test command runs in parallel by default, and without xdist when asked.

``pyproject.toml`` no longer forces ``-n auto`` in addopts (which made
``-p no:xdist`` fail with "unrecognized arguments: -n"); ``tests/conftest.py``
asks xdist for ``-n auto --maxprocesses=4`` unless the command line chose.
"""

import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFTEST = ROOT / "tests" / "conftest.py"


@pytest.fixture
def cmdline_main(request):
    """The ``pytest_cmdline_main`` hook of tests/conftest.py, as pytest registered it."""
    for plugin in request.config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == str(CONFTEST):
            return plugin.pytest_cmdline_main
    raise AssertionError("tests/conftest.py is not a registered plugin")


def _config(*, xdist=True, worker=False, **options):
    option = {"numprocesses": None, "maxprocesses": None, "tx": [], "dist": "no", **options}
    config = SimpleNamespace(
        option=SimpleNamespace(**option),
        pluginmanager=SimpleNamespace(hasplugin=lambda name: xdist and name == "xdist"),
    )
    if worker:
        config.workerinput = {}
    return config


# (command-line options, numprocesses and maxprocesses the hook leaves)
CASES = [
    pytest.param({}, "auto", 4, id="plain: -n auto, at most 4"),
    pytest.param({"maxprocesses": 2}, "auto", 2, id="--maxprocesses kept"),
    pytest.param({"dist": "loadfile"}, "auto", 4, id="--dist without -n"),
    pytest.param({"numprocesses": 0}, 0, None, id="-n 0"),
    pytest.param({"numprocesses": 3}, 3, None, id="-n 3"),
    pytest.param({"tx": ["popen"]}, None, None, id="--tx"),
]


@pytest.mark.parametrize("options, numprocesses, maxprocesses", CASES)
def test_hook_asks_for_workers_only_when_the_command_line_did_not(
    cmdline_main, options, numprocesses, maxprocesses
):
    config = _config(**options)
    cmdline_main(config)
    assert config.option.numprocesses == numprocesses
    assert config.option.maxprocesses == maxprocesses


@pytest.mark.parametrize("kind", [{"xdist": False}, {"worker": True}], ids=["no:xdist", "worker"])
def test_hook_leaves_runs_without_xdist_and_workers_alone(cmdline_main, kind):
    config = _config(**kind)
    cmdline_main(config)
    assert config.option.numprocesses is None and config.option.maxprocesses is None


def _pytest(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_CORE"))}
    env["PYTEST_XDIST_AUTO_NUM_WORKERS"] = "2"  # what -n auto resolves to
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


ONE_TEST = "tests/test_mlp.py::test_model_is_hashable_static_config"


def test_plain_command_runs_in_parallel_and_no_xdist_runs_in_one_process():
    parallel = _pytest(ONE_TEST)
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert "2 workers" in parallel.stdout, parallel.stdout
    plain = _pytest(ONE_TEST, "-p", "no:xdist")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "worker" not in plain.stdout and "1 passed" in plain.stdout, plain.stdout
