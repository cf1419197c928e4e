"""Bad input over the public API: a ValueError naming the argument, before anything compiles.

One table: each row is a call, the exception it must raise and a regular
expression its message must match (the argument's name first, then what was
expected and what was received). Every row runs with the ``compilations``
fixture and must leave it at zero: the check ran before JAX compiled anything.

Families (issue 19): params as nested lists; an ``opt_state`` of another
optimizer, of other params, or None; ``run_dir`` that is a file; a PRNG key
given as an int and a seed given as a string; absurd sizes (the memory they
would need); trees of another structure in gradcheck; chunk sizes ≤ 0; a
missing learning rate and negative or NaN schedules; losses on an empty batch,
NaN targets and one-hot rows that do not sum to 1; the argument named right
(``output_activation``, ``config``); an unbounded number of epochs; a module
object passed as model or params.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdjax import MLP, backprop, critical, data, gradcheck, losses, nets, objective, optim, train
from gdjax.train import history, loop

# Widths used nowhere else (11 and 9), so a check that ran after a JAX op would compile.
MODEL = MLP((11, 9, 2), activation="tanh")
OTHER = MLP((11, 5, 2), activation="tanh")
RNG = np.random.default_rng(0)
PARAMS = [
    {"w": RNG.normal(size=(9, 11)), "b": np.zeros(9)},
    {"w": RNG.normal(size=(2, 9)), "b": np.zeros(2)},
]
OTHER_PARAMS = [
    {"w": RNG.normal(size=(5, 11)), "b": np.zeros(5)},
    {"w": RNG.normal(size=(2, 5)), "b": np.zeros(2)},
]
NESTED = [[p["w"], p["b"]] for p in PARAMS]
FLOAT_LISTS = [[[1.0, 2.0], [3.0, 4.0]], [[5.0]]]
X = RNG.normal(size=(7, 11))
Y = np.zeros((7, 2))
LABELS = np.zeros(7, np.int32)
KEY = jax.random.key(0)
ADAM_STATE = optax.adam(0.1).init(PARAMS)  # built at import: no compile counted in a row
SGD_STATE = optax.sgd(0.1).init(PARAMS)
ADAM_OTHER_STATE = optax.adam(0.1).init(OTHER_PARAMS)
ADAM_STEP = train.make_step(MODEL, "mse", "adam", learning_rate=0.1)
SGD_STEP = train.make_step(MODEL, "mse", "sgd", learning_rate=0.1)
FIT = dict(epochs=2, key=KEY, progress=False)
KEY_INT = (
    r"key: expected a PRNG key from jax\.random\.key\(seed\) or "
    r"jax\.random\.PRNGKey\(seed\), got int 0"
)
MODULE_HINT = r"eqx\.partition\(module, eqx\.is_array\).*nnx\.split\(module\)"


def apply_fn(p, x):
    return x @ p["w"]


def one_argument(x):
    return x


class FakeModule:
    """Stands in for an Equinox/Flax module: a callable object of one argument, x."""

    __module__ = "equinox._module"

    def __call__(self, x):
        return x


MODULE_PARAMS = {"w": np.ones((11, 2)), "activation": jnp.tanh}  # a module's leaves, unsplit


def fd_f(p):
    return jnp.sum(p**2)


def bad_fit(**kwargs):
    args = dict(model=MODEL, loss="mse", optimizer="sgd", data=(X, Y), learning_rate=0.1)
    args.update(FIT)
    args.update(kwargs)
    return lambda: train.fit(**args)


def bad_population(**kwargs):
    args = dict(
        model=MODEL,
        loss="mse",
        optimizer="sgd",
        data=(X, Y),
        keys=jax.random.split(KEY, 2),
        epochs=2,
        progress=False,
        learning_rate=0.1,
    )
    args.update(kwargs)
    return lambda: train.fit_population(**args)


def one_hot(rows):
    return np.asarray(rows, np.float64)


ROWS = {
    # ------------------------------------------------ params given as nested lists
    "apply, params [[w, b], ...]": (
        lambda: MODEL.apply(NESTED, X),
        ValueError,
        r"params\[0\]: expected a dict with keys 'w' and 'b', got list\..*model\.init\(key\)",
    ),
    "apply, lists of lists of floats": (
        lambda: MODEL.apply(FLOAT_LISTS, X),
        ValueError,
        r"params\[0\]: expected a dict with keys 'w' and 'b', got list",
    ),
    "trace, params a float": (
        lambda: MODEL.trace(1.0, X),
        ValueError,
        r"params: expected a list of 2 layer dicts.*got float 1\.0",
    ),
    "backprop, nested lists": (
        lambda: backprop(MODEL, "mse", NESTED, X, Y),
        ValueError,
        r"params\[0\]: expected a dict with keys 'w' and 'b', got list",
    ),
    "objective, nested lists": (
        lambda: objective(MODEL, "mse")(NESTED, X, Y),
        ValueError,
        r"params\[0\]: expected a dict",
    ),
    "evaluate, nested lists": (
        lambda: train.evaluate(MODEL, "mse", NESTED, X, Y),
        ValueError,
        r"params\[0\]: expected a dict",
    ),
    "fit, nested lists": (bad_fit(params=NESTED), ValueError, r"params\[0\]: expected a dict"),
    "make_step's step, nested lists": (
        lambda: SGD_STEP(NESTED, SGD_STATE, X, Y),
        ValueError,
        r"params\[0\]: expected a dict",
    ),
    # ------------------------------------------------ opt_state
    "step, opt_state None": (
        lambda: ADAM_STEP(PARAMS, None, X, Y),
        ValueError,
        r"opt_state: expected the optimizer's state; build it with optimizer\.init\(params\).*"
        r"Got None",
    ),
    "step, opt_state of another optimizer": (
        lambda: ADAM_STEP(PARAMS, SGD_STATE, X, Y),
        ValueError,
        r"opt_state: expected the state of this optimizer for these params \(9 leaves.*"
        r"got 0 leaves",
    ),
    "step, opt_state of other params": (
        lambda: ADAM_STEP(PARAMS, ADAM_OTHER_STATE, X, Y),
        ValueError,
        r"opt_state\[0\]\.mu\[0\]\['b'\]: expected shape \(9,\).*got \(5,\)",
    ),
    "fit, opt_state of another optimizer": (
        bad_fit(params=PARAMS, opt_state=ADAM_STATE),
        ValueError,
        r"opt_state: expected the state of this optimizer for these params \(0 leaves",
    ),
    "fit, opt_state of other params": (
        bad_fit(optimizer="adam", opt_state=ADAM_OTHER_STATE),
        ValueError,
        r"opt_state\[0\]\.mu\[0\]\['b'\]: expected shape \(9,\)",
    ),
    "fit_population, opt_state of another optimizer": (
        bad_population(
            opt_state=jax.tree.map(lambda a: np.stack([a, a]), ADAM_STATE), learning_rate=0.1
        ),
        ValueError,
        r"opt_state: expected the state of this optimizer",
    ),
    "fit_population, opt_state without the member axis": (
        bad_population(optimizer="adam", opt_state=ADAM_STATE),
        ValueError,
        r"opt_state",
    ),
    # ------------------------------------------------ run_dir that is a file
    "fit, run_dir an existing file": (
        bad_fit(run_dir=__file__),
        ValueError,
        r"run_dir: expected a directory \(new or existing\).*which is a file",
    ),
    "fit, run_dir under a file": (
        bad_fit(run_dir=__file__ + "/run"),
        ValueError,
        r"run_dir: expected a directory \(new or existing\).*which is inside .*, which is a file",
    ),
    "fit_population, run_dir an existing file": (
        bad_population(run_dir=__file__),
        ValueError,
        r"run_dir: expected a directory",
    ),
    # ------------------------------------------------ PRNG keys given as ints, seeds as strings
    "MLP.init, key 0": (lambda: MODEL.init(0), ValueError, KEY_INT),
    "fit, key 0": (bad_fit(key=0), ValueError, KEY_INT),
    "fit, key a float": (bad_fit(key=0.5), ValueError, r"key: expected a PRNG key.*got float"),
    "fit, key an array of seeds": (
        bad_fit(key=np.zeros(3, np.int32)),
        ValueError,
        r"key: expected a PRNG key.*got an array of dtype int32 and shape \(3,\)",
    ),
    "fit_population, keys 0": (
        bad_population(keys=0),
        ValueError,
        r"keys: expected a 1-D array of P PRNG keys.*got int 0",
    ),
    "data.moons, key 0": (lambda: data.moons(0), ValueError, KEY_INT),
    "data.circles, key 0": (lambda: data.circles(0), ValueError, KEY_INT),
    "data.spirals, key 0": (lambda: data.spirals(0), ValueError, KEY_INT),
    "data.xor, key 0": (lambda: data.xor(0, n=8, noise=0.1), ValueError, KEY_INT),
    "data.linear_regression, key 0": (lambda: data.linear_regression(0), ValueError, KEY_INT),
    "data.permutation, key 0": (lambda: data.permutation(0, 5), ValueError, KEY_INT),
    "data.get, key 0": (lambda: data.get("moons", 0), ValueError, KEY_INT),
    "nets.FeedForward.init, key 0": (
        lambda: nets.FeedForward((3, 4)).init(0),
        ValueError,
        KEY_INT,
    ),
    "critical.classify_critical_point, key 0": (
        lambda: critical.classify_critical_point(fd_f, np.ones(3), key=0),
        ValueError,
        KEY_INT,
    ),
    "data.from_config, seed a string": (
        lambda: data.from_config({"data": "moons", "seed": "0"}),
        ValueError,
        r"config\['seed'\]: expected an integer seed.*got str '0'",
    ),
    "data.from_config, data_kwargs a list": (
        lambda: data.from_config({"data": "moons", "seed": 0, "data_kwargs": [1]}),
        ValueError,
        r"config\['data_kwargs'\]: expected a mapping",
    ),
    # ------------------------------------------------ absurd sizes: the memory they need
    "MLP((10**6, 10**6)).init": (
        lambda: MLP((10**6, 10**6)).init(KEY),
        ValueError,
        r"sizes: expected layer widths whose params fit in memory.*got sizes \(1000000, "
        r"1000000\): 1,000,001,000,000 params of float64.*which need 8 TB",
    ),
    "nets.FeedForward huge init": (
        lambda: nets.FeedForward((10**7, 10**7)).init(KEY),
        ValueError,
        r"net: expected a net whose params fit in memory.*which need",
    ),
    "data.moons, n = 10**10": (
        lambda: data.moons(KEY, n=10**10),
        ValueError,
        r"n: expected at most 2,147,483,647 examples.*got 10,000,000,000",
    ),
    "data.linear_regression, 8 PB of examples": (
        lambda: data.linear_regression(KEY, n=10**9, d=10**6),
        ValueError,
        r"n: expected a number of examples whose arrays fit in memory.*"
        r"1,000,000,000 examples of 1000001 values.*which need 4 PB",
    ),
    "data.permutation, n = 10**10": (
        lambda: data.permutation(KEY, 10**10),
        ValueError,
        r"n: expected at most 2,147,483,647",
    ),
    "finite_difference_grad, a chunk of 24 TB": (
        lambda: gradcheck.finite_difference_grad(fd_f, np.ones(3), chunk_size=10**12),
        ValueError,
        r"chunk_size: expected a chunk of perturbed points whose arrays fit in memory",
    ),
    # ------------------------------------------------ gradcheck
    "relative_error, leaves of other sizes": (
        lambda: gradcheck.relative_error([np.ones(2)], [np.ones(3)]),
        ValueError,
        r"b\[0\]: expected shape \(2,\) as in a, got \(3,\)",
    ),
    "relative_error, other structure": (
        lambda: gradcheck.relative_error([np.ones(2)], {"w": np.ones(2)}),
        ValueError,
        r"b: expected a pytree with the structure of a \(1 leaves",
    ),
    "relative_error, more leaves": (
        lambda: gradcheck.relative_error([np.ones(2)], [np.ones(2), np.ones(2)]),
        ValueError,
        r"b: expected a pytree with the structure of a \(1 leaves.*got 2 leaves",
    ),
    "relative_error, a non-numeric leaf": (
        lambda: gradcheck.relative_error({"f": jnp.tanh}, {"f": np.ones(2)}),
        ValueError,
        r"a\['f'\]: expected a real array, got",
    ),
    "compare, leaves of other sizes": (
        lambda: gradcheck.compare([np.ones(2)], [np.ones(3)]),
        ValueError,
        r"b\[0\]: expected shape \(2,\)",
    ),
    "finite_difference_grad, chunk_size 0": (
        lambda: gradcheck.finite_difference_grad(fd_f, np.ones(3), chunk_size=0),
        ValueError,
        r"chunk_size: expected a positive integer, got 0",
    ),
    "finite_difference_grad, chunk_size -4": (
        lambda: gradcheck.finite_difference_grad(fd_f, np.ones(3), chunk_size=-4),
        ValueError,
        r"chunk_size: expected a positive integer, got -4",
    ),
    "finite_difference_grad, f not a function": (
        lambda: gradcheck.finite_difference_grad(3.0, np.ones(3)),
        ValueError,
        r"f: expected a function, got float 3\.0",
    ),
    "check_grad, grad_fn not a function": (
        lambda: gradcheck.check_grad(fd_f, np.ones(3), grad_fn="auto"),
        ValueError,
        r"grad_fn: expected a function, got str 'auto'",
    ),
    # ------------------------------------------------ learning rates and schedules
    "optim.get('adam') without a learning rate": (
        lambda: optim.get("adam"),
        ValueError,
        r"learning_rate: expected .* for 'adam', got none",
    ),
    "optim.sgd, negative schedule": (
        lambda: optim.sgd(lambda k: -0.1),
        ValueError,
        r"learning_rate: expected a schedule whose values η_k are finite and ≥ 0.*η_0 = -0\.1",
    ),
    "optim.adam, NaN schedule": (
        lambda: optim.adam(lambda k: float("nan")),
        ValueError,
        r"learning_rate: expected a schedule.*η_0 = nan",
    ),
    "optim.adamw, a schedule negative after step 0": (
        lambda: optim.adamw(lambda k: 0.1 - 0.01 * k),
        ValueError,
        r"learning_rate: expected a schedule.*η_100 = -0\.9",
    ),
    "optim.momentum, a schedule of arrays": (
        lambda: optim.momentum(lambda k: np.ones(2)),
        ValueError,
        r"learning_rate: expected a schedule whose values η_k are scalars, got shape \(2,\)",
    ),
    "make_optimizer, negative schedule": (
        lambda: train.make_optimizer("sgd", learning_rate=lambda k: -0.1),
        ValueError,
        r"learning_rate: expected a schedule whose values η_k are finite and ≥ 0",
    ),
    "make_optimizer, NaN learning rate": (
        lambda: train.make_optimizer("adam", learning_rate=float("nan")),
        ValueError,
        r"learning_rate: expected a positive number, got nan",
    ),
    "make_step, negative schedule": (
        lambda: train.make_step(MODEL, "mse", "momentum", learning_rate=lambda k: -1.0),
        ValueError,
        r"learning_rate: expected a schedule",
    ),
    "fit, infinite schedule": (
        bad_fit(learning_rate=lambda k: float("inf")),
        ValueError,
        r"learning_rate: expected a schedule.*η_0 = inf",
    ),
    # ------------------------------------------------ losses called directly
    "mse, empty batch": (
        lambda: losses.mse(np.ones((0, 2)), np.ones((0, 2))),
        ValueError,
        r"pred: expected at least one example \(row\).*got shape \(0, 2\)",
    ),
    "softmax_cross_entropy, empty batch": (
        lambda: losses.softmax_cross_entropy(np.ones((0, 3)), np.zeros(0, np.int32)),
        ValueError,
        r"pred: expected at least one example",
    ),
    "mse, NaN targets": (
        lambda: losses.mse(np.ones((2, 1)), np.array([[np.nan], [1.0]])),
        ValueError,
        r"y: expected finite values, got 1 NaN or infinite entries",
    ),
    "sigmoid_binary_cross_entropy, NaN targets": (
        lambda: losses.sigmoid_binary_cross_entropy(np.ones((2, 1)), np.array([[np.nan], [1.0]])),
        ValueError,
        r"y: expected finite values",
    ),
    "mse, NaN predictions": (
        lambda: losses.mse(np.array([[np.inf], [1.0]]), np.ones((2, 1))),
        ValueError,
        r"pred: expected finite values, got 1 NaN or infinite entries",
    ),
    "softmax_cross_entropy, one-hot rows summing to 2": (
        lambda: losses.softmax_cross_entropy(np.ones((2, 2)), one_hot([[1, 1], [0, 1]])),
        ValueError,
        r"y: expected one-hot or probability rows that sum to 1, got row 0 summing to 2",
    ),
    "softmax_cross_entropy, negative probabilities": (
        lambda: losses.softmax_cross_entropy(np.ones((2, 2)), one_hot([[1, 0], [1.5, -0.5]])),
        ValueError,
        r"y: expected one-hot or probability rows with entries ≥ 0, got y\[1, 1\] = -0\.5",
    ),
    "softmax_cross_entropy, an all-zero row": (
        lambda: losses.get("softmax_cross_entropy")(np.ones((2, 3)), one_hot([[0, 0, 0]] * 2)),
        ValueError,
        r"y: expected one-hot or probability rows that sum to 1, got row 0 summing to 0",
    ),
    "backprop, one-hot rows summing to 2": (
        lambda: backprop(MODEL, "softmax_cross_entropy", PARAMS, X, np.ones((7, 2))),
        ValueError,
        r"y: expected one-hot or probability rows that sum to 1",
    ),
    "fit, one-hot rows summing to 2": (
        bad_fit(loss="softmax_cross_entropy", data=(X, np.ones((7, 2)))),
        ValueError,
        r"y: expected one-hot or probability rows that sum to 1",
    ),
    # ------------------------------------------------ the argument named right
    "MLP, output_activation 3": (
        lambda: MLP((3, 2), output_activation=3),
        ValueError,
        r"^output_activation: expected one of sigmoid.*got 3",
    ),
    "MLP, activation 3": (
        lambda: MLP((3, 2, 1), activation=3),
        ValueError,
        r"^activation: expected one of sigmoid.*got 3",
    ),
    "data.from_config('moons')": (
        lambda: data.from_config("moons"),
        ValueError,
        r"^config: expected a mapping like \{'data': 'moons', 'seed': 0\}.*got str 'moons'",
    ),
    "data.from_config(None)": (
        lambda: data.from_config(None),
        ValueError,
        r"^config: expected a mapping.*got NoneType None",
    ),
    # ------------------------------------------------ unbounded
    "fit, epochs = 10**12": (
        bad_fit(epochs=10**12),
        ValueError,
        r"epochs: expected at most 2,147,483,647 epochs of 1 steps.*got 1,000,000,000,000",
    ),
    "fit, 10**9 epochs of 7 steps": (
        bad_fit(epochs=10**9, batch_size=1),
        ValueError,
        r"epochs: expected at most 306,783,378 epochs of 7 steps",
    ),
    # ------------------------------------------------ modules given whole
    "fit, a module as model": (
        bad_fit(model=FakeModule(), params={"w": np.ones((11, 2))}),
        ValueError,
        r"model: expected a gdjax\.MLP or a function apply\(params, x\), got the module "
        r"FakeModule itself\. .*" + MODULE_HINT,
    ),
    "make_step, a module as model (at build)": (
        lambda: train.make_step(FakeModule(), "mse", "sgd", learning_rate=0.1),
        ValueError,
        r"model: expected a gdjax\.MLP or a function.*got the module FakeModule",
    ),
    "make_step, a function of one argument (at build)": (
        lambda: train.make_step(one_argument, "mse", "sgd", learning_rate=0.1),
        ValueError,
        r"model: expected a function apply\(params, x\) of two arguments, got one_argument\(x\)",
    ),
    "objective, a function of one argument": (
        lambda: objective(one_argument, "mse"),
        ValueError,
        r"model: expected a function apply\(params, x\) of two arguments",
    ),
    "fit, a module's leaves as params": (
        bad_fit(model=apply_fn, params=MODULE_PARAMS),
        ValueError,
        r"params\['activation'\]: expected a floating array, got \w+\. Only arrays belong in "
        r"params.*" + MODULE_HINT,
    ),
    "make_step's first call, a module's leaves as params": (
        lambda: train.make_step(apply_fn, "mse", "sgd", learning_rate=0.1)(MODULE_PARAMS, (), X, Y),
        ValueError,
        r"params\['activation'\]: expected a floating array.*" + MODULE_HINT,
    ),
    "check_grad, a module's leaves as params": (
        lambda: gradcheck.check_grad(fd_f, MODULE_PARAMS),
        ValueError,
        r"params\['activation'\]: expected a floating array.*" + MODULE_HINT,
    ),
    "classify_critical_point, a module's leaves as params": (
        lambda: critical.classify_critical_point(fd_f, MODULE_PARAMS, key=KEY),
        ValueError,
        r"params\['activation'\]: expected a floating array.*" + MODULE_HINT,
    ),
}


@pytest.mark.parametrize(("call", "error", "message"), ROWS.values(), ids=ROWS.keys())
def test_bad_input_is_named_before_compiling(call, error, message, compilations):
    with pytest.raises(error, match=message):
        call()
    assert compilations.count == 0


@pytest.mark.parametrize(
    "schedule",
    [
        optax.linear_schedule(0.1, 0.0, 50),  # reaches 0: allowed
        optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 50),  # starts at 0: allowed
        optax.exponential_decay(0.1, 10, 0.5),
    ],
)
def test_schedules_that_reach_zero_are_accepted(schedule):
    opt = optim.sgd(schedule)
    assert opt.init(jnp.zeros(2)).count == 0
    assert train.make_optimizer("adam", learning_rate=schedule) is not None


def test_probability_targets_that_sum_to_one_are_accepted():
    y = np.array([[0.25, 0.75], [1.0, 0.0]], np.float32)  # rounding within √ε passes too
    value = losses.softmax_cross_entropy(np.zeros((2, 2), np.float32), y * (1 + 1e-6))
    assert np.isclose(float(value), np.log(2), rtol=1e-5)


def test_memory_limit_is_the_machine_or_device_memory(monkeypatch):
    from gdjax import _checks

    limit, where = _checks.memory_limit()
    assert limit is not None and limit > 2**26 and where
    # A size just under the limit passes, just over it is refused, with both sizes said.
    monkeypatch.setattr(_checks, "memory_limit", lambda: (10_000, "a test's 10 kB"))
    MLP((10, 20, 2)).check_size(jnp.float32)  # 262 params × 4 bytes
    with pytest.raises(ValueError, match=r"sizes: .*a test's 10 kB: 10 KB.*which need 16\.8 KB"):
        MLP((10, 200, 10)).check_size(jnp.float32)  # 4 210 params × 4 bytes


def test_a_run_estimated_to_outlast_the_bound_warns_once(monkeypatch, capsys):
    """With LONG_RUN_SECONDS = 0 every run is "too long": one LongRunWarning, naming the
    epochs and the estimate, however many blocks the run has; the progress bar shows the
    time left."""
    monkeypatch.setattr(loop, "LONG_RUN_SECONDS", 0.0)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    model = MLP((2, 3, 1), activation="tanh")
    x = np.linspace(-1, 1, 8).reshape(4, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.fit(
            model, "mse", "sgd", (x, x[:, :1]), epochs=6, key=KEY, eval_every=1, learning_rate=0.1
        )
    long = [w for w in caught if issubclass(w.category, history.LongRunWarning)]
    assert len(long) == 1
    assert issubclass(history.LongRunWarning, UserWarning)
    assert str(long[0].message).startswith("epochs: 6 epochs will take about")
    assert long[0].filename == __file__  # points at the user's call
    assert "left=" in capsys.readouterr().err


def test_a_short_run_does_not_warn():
    model = MLP((2, 3, 1), activation="tanh")
    x = np.linspace(-1, 1, 8).reshape(4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", history.LongRunWarning)
        train.fit(model, "mse", "sgd", (x, x[:, :1]), epochs=3, key=KEY, progress=False,
                  eval_every=1, learning_rate=0.1)  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (42.0, "42 s"),
        (90.0, "1.5 min"),
        (7200.0, "2 h"),
        (3 * 86400.0, "3 days"),
        (10**12 * 1e-3, "31.7 years"),
    ],
)
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert loop._duration(seconds) == text


def test_a_jax_array_found_finite_is_not_read_again_but_a_numpy_array_is():
    """check_finite remembers immutable jax.Arrays it found finite (by identity, while
    they live); a NumPy array can change in place, so it is read on every check."""
    from gdjax import _checks

    x = jax.numpy.ones(4)
    _checks.check_finite("x", x)
    assert _checks._FINITE.get(id(x)) is x
    bad = jax.numpy.array([1.0, np.nan])
    with pytest.raises(ValueError, match="x: expected finite values, got 1 NaN"):
        _checks.check_finite("x", bad)
    assert _checks._FINITE.get(id(bad)) is None  # a refused array is not remembered
    arr = np.ones(3)
    _checks.check_finite("y", arr)
    arr[1] = np.inf  # changed in place after a check: still refused
    with pytest.raises(ValueError, match="y: expected finite values, got 1 NaN or infinite"):
        _checks.check_finite("y", arr)
    key = id(x)
    del x
    assert key not in _checks._FINITE  # forgotten with the array
