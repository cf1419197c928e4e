"""Test set-up: float64 available everywhere, hypothesis profiles, a compile counter.

float64 is enabled for the whole session (``jax_enable_x64``); float32 tests
ask for float32 explicitly (``model.init(key, dtype=jnp.float32)``), so both
precisions are exercised in one run.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE=name``):
  ``ci`` (default): few examples per test, derandomised, so CI is fast and repeatable;
  ``thorough``: many more examples, for a local deep check.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

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
