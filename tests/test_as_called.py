"""Public functions called eagerly compile once per static configuration (issue 20 §2).

Each function of the table is called as a user calls it (no ``jax.jit`` of
their own): its result equals the eager reference (the same call under
``jax.disable_jit()``, op by op), and a second call with new values of the
same shapes compiles nothing. Inside a user's ``jit``/``vmap``/``grad`` the
un-jitted body runs (nothing is added to gdjax's cache of compiled bodies).
"""

import importlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdjax
from gdjax import _jit, cli, curvature, diagnostics, jacobians, per_example
from gdjax.mlp import MLP

MODEL = MLP((3, 5, 2), activation="tanh")
LOSS = "mse"
F = gdjax.objective(MODEL, LOSS)  # built once, as the docs ask
BACKPROP = importlib.import_module("gdjax.backprop")  # the module (gdjax.backprop: the function)


def _problem(seed: int):
    kp, kx, ky = jax.random.split(jax.random.key(seed), 3)
    params = MODEL.init(kp, dtype=jnp.float64)
    x = jax.random.normal(kx, (7, 3), jnp.float64)
    y = jax.random.normal(ky, (7, 2), jnp.float64)
    v = jax.tree.map(lambda p: jnp.cos(p + seed), params)
    return params, x, y, v


def _grads(p, x, y):
    return gdjax.backprop(MODEL, LOSS, p, x, y)[1]


# name -> fn(params, x, y, v), each a call as the docs show it
SELF_JITTED = {
    "hvp": lambda p, x, y, v: curvature.hvp(F, p, v, x, y),
    "gnvp": lambda p, x, y, v: curvature.gnvp(MODEL, LOSS, p, v, x, y),
    "per_example_deltas": lambda p, x, y, v: per_example.per_example_deltas(MODEL, LOSS, p, x, y),
    "per_example_grads": lambda p, x, y, v: per_example.per_example_grads(MODEL, LOSS, p, x, y),
    "per_example_grad_norms": lambda p, x, y, v: per_example.per_example_grad_norms(
        MODEL, LOSS, p, x, y
    ),
    "layer_norms": lambda p, x, y, v: diagnostics.layer_norms(p, _grads(p, x, y), updates=v),
    "gradient_report": lambda p, x, y, v: diagnostics.gradient_report(MODEL, LOSS, p, x, y),
    "frobenius_norm": lambda p, x, y, v: diagnostics.frobenius_norm(p[0]["w"]),
    "layer_jacobians": lambda p, x, y, v: jacobians.layer_jacobians(MODEL, p, x),
    "jacobian_products": lambda p, x, y, v: jacobians.jacobian_products(MODEL, p, x),
    "input_output_jacobian": lambda p, x, y, v: jacobians.input_output_jacobian(MODEL, p, x),
    "jacobian_singular_values": lambda p, x, y, v: jacobians.jacobian_singular_values(MODEL, p, x),
    # the forward pass, the losses and the hand backprop themselves
    "MLP.apply": lambda p, x, y, v: MODEL.apply(p, x),
    "MLP.trace": lambda p, x, y, v: MODEL.trace(p, x),
    "Loss.__call__": lambda p, x, y, v: gdjax.losses.get(LOSS)(x[:, :2], y),
    "objective": lambda p, x, y, v: F(p, x, y),
    "backprop": lambda p, x, y, v: gdjax.backprop(MODEL, LOSS, p, x, y),
    "backprop_with_deltas": lambda p, x, y, v: gdjax.backprop_with_deltas(MODEL, LOSS, p, x, y),
}

# Functions built on jitted kernels of their own (host loops, linearised operators): they
# must not compile again either.
KEY = jax.random.key(3)
HOST_LOOPS = {
    "hvp_operator": lambda p, x, y, v: curvature.hvp_operator(F, p, x, y)(v),
    "gradient_noise": lambda p, x, y, v: per_example.gradient_noise(MODEL, LOSS, p, x, y).grad,
    "minibatch_errors": lambda p, x, y, v: per_example.minibatch_errors(
        MODEL, LOSS, p, x, y, 3, key=KEY, num_samples=4
    ),
    "taylor_step": lambda p, x, y, v: (
        curvature.taylor_step(F, p, x, y, etas=[0.1, 1.0], lambda_max=1.0).actual
    ),
    "top_eigenvalues": lambda p, x, y, v: (
        curvature.top_eigenvalues(F, p, 1, x, y, key=KEY, tol=1e-6).eigenvalues
    ),
    "trace": lambda p, x, y, v: curvature.trace(F, p, x, y, key=KEY, samples=4).estimate,
    "newton_step cg": lambda p, x, y, v: (
        curvature.newton_step(F, p, x, y, damping=1.0, method="cg").params
    ),
    "newton_step dense": lambda p, x, y, v: curvature.newton_step(F, p, x, y, damping=1.0).params,
}


@pytest.mark.parametrize("name", sorted(SELF_JITTED))
def test_self_jitted_call_equals_its_eager_reference(name):
    fn = SELF_JITTED[name]
    args = _problem(0)
    got = fn(*args)
    with jax.disable_jit():
        want = fn(*args)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13), got, want)


@pytest.mark.parametrize("name", sorted(SELF_JITTED | HOST_LOOPS))
def test_a_second_call_compiles_nothing(name, compilations):
    fn = (SELF_JITTED | HOST_LOOPS)[name]
    _jit.clear()  # compiled again here, whatever ran before
    jax.block_until_ready(fn(*_problem(0)))
    after_first = compilations.count
    assert after_first >= 1 or name in HOST_LOOPS  # a host loop may reuse earlier kernels
    jax.block_until_ready(fn(*_problem(1)))  # new values, same shapes
    assert compilations.count == after_first, name


def test_hvp_first_call_compiles_then_is_served_from_the_cache(compilations):
    params, x, y, v = _problem(0)
    f = gdjax.objective(MODEL, "mse")  # a fresh f: a fresh key
    curvature.hvp(f, params, v, x, y)
    assert compilations.count >= 1
    assert any(key[0] is curvature.products._hvp_body and key[1] == (f,) for key in _jit._cache)


@pytest.mark.parametrize(
    "transform, s",
    [
        pytest.param(jax.jit, 1.0, id="jit"),
        pytest.param(jax.vmap, [1.0, 0.5], id="vmap"),
        pytest.param(lambda g: jax.grad(lambda s: jnp.sum(g(s))), 1.0, id="grad"),
    ],
)
def test_inside_a_user_transformation_the_body_runs_unjitted(transform, s, monkeypatch):
    params, x, y, v = _problem(0)

    def g(s):  # Hv at θ scaled by s, as a flat vector
        scaled = jax.tree.map(lambda p: s * p, params)
        return ravel_pytree(curvature.hvp(F, scaled, v, x, y))[0]

    def reference(s):  # the body itself, by hand
        scaled = jax.tree.map(lambda p: s * p, params)
        return ravel_pytree(curvature.products._hvp_body(F, scaled, v, (x, y)))[0]

    s = jnp.asarray(s)
    want = transform(reference)(s)
    monkeypatch.setattr(_jit, "_compiled", _refuse)
    got = transform(g)(s)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def _refuse(body, static):
    raise AssertionError(f"{body.__name__} was jitted by gdjax under a user transformation")


def test_a_new_closure_each_call_compiles_each_time(compilations):
    """f is cached by identity: the documented cost of a lambda written inside a loop."""
    params, x, y, v = _problem(0)
    counts = []
    for scale in (1.0, 2.0):
        curvature.hvp(lambda p, a, b, c=scale: c * F(p, a, b), params, v, x, y)
        counts.append(compilations.count)
    assert counts[1] > counts[0] >= 1


def test_the_cache_is_bounded(monkeypatch):
    params, x, y, v = _problem(0)
    monkeypatch.setattr(_jit, "MAX_ENTRIES", 2)
    _jit.clear()
    fs = [gdjax.objective(MODEL, "mse") for _ in range(3)]
    for f in fs:
        curvature.hvp(f, params, v, x, y)
    assert len(_jit._cache) == 2
    assert [key[1] for key in _jit._cache] == [(fs[1],), (fs[2],)]  # the oldest went first


class _Unhashable:
    """A callable cost that cannot be hashed: it runs eagerly, as before."""

    __hash__ = None

    def __call__(self, p, x, y):
        return F(p, x, y)

    def __eq__(self, other):
        return isinstance(other, _Unhashable)


def test_an_unhashable_f_runs_eagerly_with_the_same_result():
    params, x, y, v = _problem(0)
    size = len(_jit._cache)
    got = curvature.hvp(_Unhashable(), params, v, x, y)
    assert len(_jit._cache) == size
    want = curvature.hvp(F, params, v, x, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, want)


# ---------------------------------------------------------------- the scripts' compilation cache

TINY_SCRIPT = """
import sys
import jax, jax.numpy as jnp
from gdjax import cli

def main(argv):
    cli.parser("A tiny script.").parse_args(argv)
    print(jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.arange(3.0)).tolist())
    print(jax.config.jax_compilation_cache_dir)
    return 0

sys.exit(cli.run(main))
"""


def _run_tiny(cache_root, *flags):
    env = {k: v for k, v in os.environ.items() if k != cli.COMPILE_CACHE_ENV}
    env |= {"GDJAX_CACHE_DIR": str(cache_root), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", TINY_SCRIPT, *flags], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


def test_a_script_keeps_its_compiled_programs_in_the_cache_dir(tmp_path):
    cache = tmp_path / "cache" / "jax-cache"
    first = _run_tiny(tmp_path / "cache")
    assert first[1] == str(cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert entries  # the programs compiled by the first run
    second = _run_tiny(tmp_path / "cache")
    assert second == first  # the same output from the cached programs
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing compiled anew


@pytest.mark.parametrize(
    "flags, env, on",
    [
        pytest.param([], {}, True, id="default"),
        pytest.param(["--no-compile-cache"], {}, False, id="flag"),
        pytest.param([], {"GDJAX_COMPILE_CACHE": "0"}, False, id="env"),
    ],
)
def test_the_cache_is_on_in_a_script_unless_turned_off(flags, env, on, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "enable_compile_cache", lambda: calls.append(1))
    monkeypatch.delenv(cli.COMPILE_CACHE_ENV, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def main(argv):
        cli.parser("A script.").parse_args(argv)
        return 0

    assert main(flags) == 0 and calls == []  # main called directly, as tests call it
    assert cli.run(main, flags) == 0
    assert calls == ([1] if on else [])
    assert not cli._running


def test_enable_compile_cache_sets_jax_config(tmp_path, monkeypatch):
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {name: getattr(jax.config, name) for name in names}
    try:
        assert cli.enable_compile_cache(tmp_path / "c") == tmp_path / "c"
        got = {name: getattr(jax.config, name) for name in names}
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
    assert got == dict(zip(names, (str(tmp_path / "c"), 0.0, 0), strict=True))
    monkeypatch.setenv("GDJAX_CACHE_DIR", str(tmp_path / "root"))
    assert cli.compile_cache_dir() == tmp_path / "root" / "jax-cache"


@pytest.mark.parametrize(
    "name, body",
    [
        ("MLP.apply", gdjax.mlp._output),
        ("MLP.trace", gdjax.mlp._forward),
        ("Loss.__call__", gdjax.losses._value),
        ("objective", BACKPROP._cost),
        ("backprop", BACKPROP._backprop_with_deltas),
        ("backprop_with_deltas", BACKPROP._backprop_with_deltas),
    ],
)
def test_forward_losses_and_backprop_run_one_compiled_program(name, body):
    """Called eagerly they run one cached jit of their body, not one dispatch per op."""
    _jit.clear()
    jax.block_until_ready(SELF_JITTED[name](*_problem(0)))
    assert any(key[0] is body for key in _jit._cache), name
