"""Test set-up: float64 available everywhere, hypothesis profiles, a compile counter.

float64 is enabled for the whole session (``jax_enable_x64``); float32 tests
ask for float32 explicitly (``model.init(key, dtype=jnp.float32)``), so both
precisions are exercised in one run.

The suite runs on up to four cores: unless the command line says otherwise
(``-n N``, ``-n 0``, ``--tx``, or ``-p no:xdist`` to run without the plugin),
``pytest_cmdline_main`` below asks pytest-xdist for ``-n auto --maxprocesses=4``.
So ``python -m pytest`` (the README's and CI's command) runs in parallel, and
``python -m pytest tests/test_mlp.py -p no:xdist`` runs in one plain process.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE=name``):
  ``ci`` (default): few examples per test, derandomised, so CI is fast and repeatable;
  ``thorough``: many more examples, for a local deep check.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)
# Scripts the tests run (in-process or as children) keep no persistent compilation
# cache in the user's ~/.cache; tests/test_as_called.py tests the cache itself.
os.environ.setdefault("GDJAX_COMPILE_CACHE", "0")

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

MAX_WORKERS = 4


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """``-n auto --maxprocesses=4`` when xdist is loaded and no distribution was asked for.

    Runs before xdist's own ``pytest_cmdline_main``, which turns ``numprocesses``
    into workers. Not in xdist's workers (they must not spawn workers of their own).
    """
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    option = config.option
    if option.numprocesses is not None or option.tx:
        return  # the user chose the workers: -n N, -n 0 or --tx
    option.numprocesses = "auto"
    if option.maxprocesses is None:
        option.maxprocesses = MAX_WORKERS


settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    # No "explain" phase: it reruns a failing example many times, each a fresh compile.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class CompileCounter:
    """Counts XLA backend compilations while it is active."""

    def __init__(self):
        self.count = 0

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1


@pytest.fixture
def compilations():
    """A live count of XLA compilations made during the test."""
    counter = CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    yield counter
    jax.monitoring.unregister_event_duration_listener(counter)


@pytest.fixture
def key():
    """A fixed PRNG key; tests split it as they need."""
    return jax.random.key(0)
