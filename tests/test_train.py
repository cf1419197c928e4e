"""Update steps and the training loop: equal trajectories, convergence, schedules, guards."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdjax import MLP, backprop, data, objective, train


def _regression(key, n=40, d=3, dtype=jnp.float64):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (n, d), dtype)
    y = jnp.sin(x @ jnp.arange(1.0, d + 1, dtype=dtype))[:, None] + 0.1 * jax.random.normal(
        k2, (n, 1), dtype
    )
    return x, y


def test_hand_and_auto_steps_give_the_same_params_after_100_steps(key):
    model = MLP((3, 8, 8, 1), activation="tanh")
    x, y = _regression(key)
    trajectories = {}
    for grad in ("hand", "auto"):
        step = train.make_step(model, "mse", "momentum", grad=grad, learning_rate=0.05)
        params = model.init(key, dtype=jnp.float64)
        opt_state = step.optimizer.init(params)
        for _ in range(100):
            params, opt_state, metrics = step(params, opt_state, x, y)
        trajectories[grad] = params
    chex.assert_trees_all_close(trajectories["hand"], trajectories["auto"], rtol=1e-11, atol=1e-13)
    initial = objective(model, "mse")(model.init(key, dtype=jnp.float64), x, y)
    assert float(metrics["loss"]) < 0.5 * float(initial)  # and training did something


def test_one_full_batch_sgd_step_is_w_minus_lr_times_gradient(key):
    """θ₁ = θ₀ − η ∂C/∂θ, with ∂C/∂θ from jax.grad computed independently of the step."""
    model = MLP((3, 5, 2), activation="sigmoid")
    x, _ = _regression(key)
    y = jnp.asarray(np.random.default_rng(0).integers(0, 2, 40))
    params = model.init(key, dtype=jnp.float64)
    expected_grads = jax.grad(objective(model, "softmax_cross_entropy"))(params, x, y)
    expected = jax.tree.map(lambda w, g: w - 0.3 * g, params, expected_grads)
    result = train.fit(
        model,
        "softmax_cross_entropy",
        "sgd",
        (x, y),
        epochs=1,
        key=key,
        params=params,
        learning_rate=0.3,
        progress=False,
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), result.params, expected)
    assert result.history["step_loss"].shape == (1,)


def test_linear_regression_by_full_batch_gd_reaches_least_squares(key):
    ds = data.linear_regression(key, n=200, d=5, noise=0.1, dtype=jnp.float64)
    model = MLP((5, 1), output_activation="identity")
    result = train.fit(
        model,
        "mse",
        "sgd",
        (ds.x, ds.y),
        epochs=400,
        key=key,
        params=model.init(key, dtype=jnp.float64),
        learning_rate=0.5,
        progress=False,
        eval_every=0,
    )
    design = jnp.concatenate([ds.x, jnp.ones((ds.num_train, 1), jnp.float64)], axis=1)
    solution = jnp.linalg.lstsq(design, ds.y)[0]
    np.testing.assert_allclose(result.params[0]["w"].ravel(), solution[:5, 0], atol=1e-5)
    np.testing.assert_allclose(result.params[0]["b"], solution[5], atol=1e-5)


def test_xor_is_solved_by_a_2_4_1_sigmoid_network_with_plain_gd():
    ds = data.xor()
    model = MLP((2, 4, 1), activation="sigmoid", output_activation="sigmoid")
    result = train.fit(
        model,
        "mse",
        "sgd",
        (ds.x, ds.y),
        epochs=2000,
        key=jax.random.key(1),
        learning_rate=5.0,
        progress=False,
        eval_every=0,
    )
    out = np.asarray(model.apply(result.params, ds.x)).ravel()
    np.testing.assert_array_equal(out > 0.5, np.asarray(ds.y).ravel() > 0.5)


def test_digits_reach_95_percent_test_accuracy_with_adam():
    ds = data.digits()
    model = MLP((64, 64, 10), activation="relu")
    result = train.fit(
        model,
        ds.loss,
        "adam",
        ds,
        epochs=15,
        batch_size=64,
        key=jax.random.key(0),
        learning_rate=1e-3,
        progress=False,
        eval_every=5,
    )
    assert result.history["test_accuracy"][-1] >= 0.95, result.history["test_accuracy"]
    assert list(result.history["eval_epoch"]) == [5, 10, 15]
    assert result.history["train_loss"][-1] < result.history["train_loss"][0]


def _small_problem(key, n=10):
    model = MLP((3, 4, 2), activation="tanh")
    x, _ = _regression(key, n=n)
    y = jnp.asarray(np.random.default_rng(1).integers(0, 2, n))
    return model, x, y


def test_ragged_last_batch_matches_a_manual_loop(key):
    """n = 10, B = 4: steps on 4, 4, then the 2 left over, in the epoch's permutation."""
    model, x, y = _small_problem(key)
    params = model.init(key, dtype=jnp.float64)
    result = train.fit(
        model,
        "softmax_cross_entropy",
        "sgd",
        (x, y),
        epochs=2,
        batch_size=4,
        key=key,
        params=params,
        learning_rate=0.1,
        progress=False,
    )
    _, shuffle_key = jax.random.split(key)
    grad = jax.grad(objective(model, "softmax_cross_entropy"))
    expected, losses = params, []
    for epoch in (1, 2):
        perm = np.asarray(data.permutation(jax.random.fold_in(shuffle_key, epoch), 10))
        for batch in (perm[:4], perm[4:8], perm[8:]):
            losses.append(
                float(objective(model, "softmax_cross_entropy")(expected, x[batch], y[batch]))
            )
            g = grad(expected, x[batch], y[batch])
            expected = jax.tree.map(lambda w, g: w - 0.1 * g, expected, g)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), result.params, expected)
    np.testing.assert_allclose(result.history["step_loss"], losses, rtol=1e-13)
    # the epoch loss weights the ragged batch by its 2 examples
    first = np.average(losses[:3], weights=[4, 4, 2])
    np.testing.assert_allclose(result.history["loss"][0], first, rtol=1e-13)


@pytest.mark.parametrize(("batch_size", "steps"), [(None, 1), (1, 10), (3, 4), (5, 2), (10, 1)])
def test_steps_per_epoch_follow_the_batch_size(key, batch_size, steps):
    model, x, y = _small_problem(key)
    result = train.fit(
        model,
        "softmax_cross_entropy",
        "sgd",
        (x, y),
        epochs=2,
        batch_size=batch_size,
        key=key,
        learning_rate=0.1,
        progress=False,
        eval_every=0,
    )
    assert result.history["step_loss"].shape == (2 * steps,)
    assert train.steps_per_epoch(10, batch_size) == steps


def test_same_key_is_bit_identical_and_another_key_shuffles_differently(key):
    model, x, y = _small_problem(key, n=24)

    def run(k):
        return train.fit(
            model,
            "softmax_cross_entropy",
            "adam",
            (x, y),
            epochs=3,
            batch_size=5,
            key=k,
            params=model.init(key),
            learning_rate=0.01,
            progress=False,
        )

    a, b, c = run(key), run(key), run(jax.random.key(7))
    for name in a.history:
        np.testing.assert_array_equal(a.history[name], b.history[name])
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    # same init params, so any difference comes from the shuffles
    assert not np.array_equal(a.history["step_loss"], c.history["step_loss"])


def test_fit_compiles_once_and_a_second_fit_reuses_it(compilations, key):
    model, x, y = _small_problem(key, n=12)
    kwargs = dict(batch_size=5, learning_rate=0.1, progress=False)
    train.fit(model, "softmax_cross_entropy", "sgd", (x, y), epochs=1, key=key, **kwargs)
    assert compilations.count > 0
    before = compilations.count
    # More epochs, another key, the same model, loss, optimizer and batch schedule:
    # the cached epoch function and evaluation are reused, nothing compiles.
    train.fit(
        model, "softmax_cross_entropy", "sgd", (x, y), epochs=6, key=jax.random.key(3), **kwargs
    )
    assert compilations.count == before


def test_make_step_does_not_recompile_and_donates(compilations, key):
    model, x, y = _small_problem(key, n=12)
    step = train.make_step(model, "softmax_cross_entropy", "adam", learning_rate=1e-2)
    params = model.init(key)
    opt_state = step.optimizer.init(params)
    params, opt_state, _ = step(params, opt_state, x, y)
    after_first = compilations.count
    old = params
    for _ in range(5):
        params, opt_state, _ = step(params, opt_state, x, y)
    assert compilations.count == after_first
    assert old[0]["w"].is_deleted()  # donated buffers are reused, not copied


@pytest.mark.parametrize("eval_every", [1, 0], ids=["one epoch per call", "blocks of epochs"])
def test_a_diverging_learning_rate_stops_with_a_clear_message(key, eval_every):
    ds = data.linear_regression(key, n=100, d=5)
    model = MLP((5, 1), output_activation="identity")
    with pytest.warns(train.DivergedWarning, match=r"diverged at epoch \d+, step 1 of 1") as w:
        result = train.fit(
            model,
            "mse",
            "sgd",
            (ds.x, ds.y),
            epochs=200,
            key=key,
            learning_rate=1e3,
            eval_every=eval_every,
            progress=False,
        )
    message = str(w[0].message)
    assert w[0].filename == __file__  # the warning points at the call of fit
    assert "Last finite loss:" in message and "learning_rate=1000.0" in message
    assert result.diverged == message
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(result.params))
    assert len(result.history["epoch"]) < 200
    assert np.all(np.isfinite(result.history["step_loss"][:-1]))


def _spy_on_blocks(monkeypatch, force_guard=False, fake_not_finite_once=False):
    """Record the ``guard`` of every block function fit builds; optionally force the
    guard on, or report the first unguarded block as not finite (a false alarm)."""
    real = train.epochs._make_epochs
    guards = []

    def spy(model, loss, tx, grad, schedule, count, mesh=None, guard=True, members=False, **kw):
        guard = guard or force_guard
        guards.append(guard)
        run = real(model, loss, tx, grad, schedule, count, mesh, guard, members, **kw)
        if guard or not fake_not_finite_once or len(guards) > 1:
            return run

        def first_block_flagged(*args):
            params, opt_state, values, _ = run(*args)
            return params, opt_state, values, jnp.asarray(train.epochs.NOT_FINITE, jnp.int32)

        return first_block_flagged

    monkeypatch.setattr(train.loop, "_make_epochs", spy)
    return guards


def _diverging_fit(key, **kwargs):
    ds = data.linear_regression(key, n=100, d=5)
    model = MLP((5, 1), output_activation="identity")
    return train.fit(
        model, "mse", "sgd", (ds.x, ds.y), epochs=80, key=key, learning_rate=1e3,
        progress=False, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    "kwargs", [dict(eval_every=0), dict(eval_every=1, callback=lambda *a: None)],
    ids=["pipelined blocks", "a block per epoch, read at once"],
)  # fmt: skip
def test_blocks_run_unguarded_and_a_diverged_one_is_replayed_guarded(key, monkeypatch, kwargs):
    """Same result as guarding every step: the last finite params, history and message."""
    guards = _spy_on_blocks(monkeypatch)
    with pytest.warns(train.DivergedWarning):
        got = _diverging_fit(key, **kwargs)
    assert guards[0] is False and True in guards  # ran unguarded, replayed guarded
    monkeypatch.undo()
    _spy_on_blocks(monkeypatch, force_guard=True)
    with pytest.warns(train.DivergedWarning):
        want = _diverging_fit(key, **kwargs)
    assert got.diverged == want.diverged
    chex.assert_trees_all_equal(got.params, want.params)
    chex.assert_trees_all_equal(got.opt_state, want.opt_state)
    for name in want.history:
        np.testing.assert_array_equal(got.history[name], want.history[name])


def test_a_clean_run_never_builds_the_guarded_blocks(key, monkeypatch):
    model, x, y = _small_problem(key)
    guards = _spy_on_blocks(monkeypatch)
    train.fit(model, "softmax_cross_entropy", "sgd", (x, y), **_fit_kwargs(epochs=5))
    assert guards and not any(guards)


@pytest.mark.parametrize(
    "kwargs", [dict(eval_every=0), dict(eval_every=1, callback=lambda *a: None)],
    ids=["pipelined blocks", "a block per epoch, read at once"],
)  # fmt: skip
def test_a_replay_that_stays_finite_goes_on_guarded_from_it(key, monkeypatch, kwargs):
    """A flagged block whose guarded rerun is finite: training goes on from the rerun
    (the block dispatched after the flagged one is dropped), as a guarded run would."""
    model, x, y = _small_problem(key, n=40)
    fit_kwargs = _fit_kwargs(epochs=70, batch_size=8, **kwargs)
    guards = _spy_on_blocks(monkeypatch, fake_not_finite_once=True)
    got = train.fit(model, "softmax_cross_entropy", "sgd", (x, y), **fit_kwargs)
    replay = guards.index(True)  # after the flagged block (and the one dispatched after it)
    assert replay in (1, 2) and not any(guards[:replay]) and all(guards[replay:])
    assert got.diverged is None
    monkeypatch.undo()
    _spy_on_blocks(monkeypatch, force_guard=True)
    want = train.fit(model, "softmax_cross_entropy", "sgd", (x, y), **fit_kwargs)
    chex.assert_trees_all_equal(got.params, want.params)
    for name in want.history:
        np.testing.assert_array_equal(got.history[name], want.history[name])


def test_callback_runs_every_k_epochs(key):
    model, x, y = _small_problem(key)
    seen = []
    train.fit(
        model,
        "softmax_cross_entropy",
        "sgd",
        (x, y),
        epochs=7,
        key=key,
        learning_rate=0.1,
        progress=False,
        callback=lambda e, p, s, h: seen.append((e, len(h["loss"]))),
        callback_every=3,
    )
    assert seen == [(3, 3), (6, 6)]


def test_diagnostics_are_recorded_at_the_chosen_interval(key):
    model = MLP((3, 6, 6, 2), activation="sigmoid")
    _, x, y = _small_problem(key)
    result = train.fit(
        model,
        "softmax_cross_entropy",
        "sgd",
        (x, y),
        epochs=4,
        key=key,
        learning_rate=0.1,
        progress=False,
        diagnostics_every=2,
    )
    assert list(result.history["diagnostics_epoch"]) == [2, 4]
    assert result.history["diagnostics/grad_norm"].shape == (2, 3)


def test_a_custom_optax_transformation_is_accepted(key):
    model, x, y = _small_problem(key)
    result = train.fit(
        model,
        "softmax_cross_entropy",
        optax.chain(optax.clip(1.0), optax.sgd(0.1)),
        (x, y),
        epochs=2,
        key=key,
        progress=False,
    )
    assert result.history["loss"].shape == (2,)


# ------------------------------------------------------------------ bad input


def _fit_kwargs(**overrides):
    kwargs = dict(epochs=1, key=jax.random.key(0), learning_rate=0.1, progress=False)
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize(
    ("optimizer", "data_fn", "overrides", "message"),
    [
        (
            "adagrad",
            None,
            {},
            r"optimizer: expected one of sgd, momentum, nesterov, rmsprop, "
            r"adam, adamw or an optax.GradientTransformation, got 'adagrad'",
        ),
        ("sgd", None, {"batch_size": 0}, r"batch_size: expected None .* \[1, 10\].*got 0"),
        ("sgd", None, {"batch_size": 11}, r"batch_size: expected .* \[1, 10\].*got 11"),
        ("sgd", None, {"epochs": 0}, r"epochs: expected a positive integer, got 0"),
        ("sgd", None, {"epochs": -3}, r"epochs: expected a positive integer, got -3"),
        ("sgd", None, {"grad": "numeric"}, r"grad: expected 'hand' or 'auto', got 'numeric'"),
        ("sgd", None, {"learning_rate": -1.0}, r"learning_rate: expected a positive number"),
        ("sgd", lambda x, y: (x, y[:9]), {}, r"y: expected 10 examples.*got 9"),
        (
            "sgd",
            lambda x, y: (x.at[3, 1].set(jnp.nan), y),
            {},
            r"data.x: expected finite values, got 1 NaN or infinite entries",
        ),
        (
            "sgd",
            lambda x, y: (x, y.at[0].set(5)),
            {},
            r"y: expected integer labels in \[0, 1\] for 2 output units, got label 5",
        ),
        ("sgd", lambda x, y: "not data", {}, r"data: expected a gdjax.data.Dataset or a tuple"),
        ("sgd", None, {"model": "an MLP"}, r"model: expected a gdjax.MLP or a function, got str"),
    ],
    ids=[
        "unknown optimizer",
        "batch 0",
        "batch > n",
        "epochs 0",
        "epochs < 0",
        "grad mode",
        "negative lr",
        "rows differ",
        "NaN in x",
        "label range",
        "not data",
        "not a model",
    ],
)
def test_fit_rejects_bad_input_before_compiling(
    compilations, key, optimizer, data_fn, overrides, message
):
    model, x, y = _small_problem(key)
    overrides = dict(overrides)
    model = overrides.pop("model", model)
    batch = (x, y) if data_fn is None else data_fn(x, y)
    before = compilations.count
    with pytest.raises(ValueError, match=message):
        train.fit(model, "softmax_cross_entropy", optimizer, batch, **_fit_kwargs(**overrides))
    assert compilations.count == before


def test_make_step_rejects_bad_names():
    model = MLP((2, 1))
    with pytest.raises(ValueError, match=r"optimizer: expected one of sgd.*got 'lbfgs'"):
        train.make_step(model, "mse", "lbfgs", learning_rate=0.1)
    with pytest.raises(
        ValueError,
        match=r"learning_rate: expected a positive number for "
        r"optimizer 'adam', got none",
    ):
        train.make_step(model, "mse", "adam")
    with pytest.raises(ValueError, match=r"hyperparams: expected none with an optax"):
        train.make_step(model, "mse", optax.sgd(0.1), learning_rate=0.1)


def test_backprop_step_equals_grad_of_objective_inside_make_step(key):
    """The hand step really uses the hand gradient: its update is −η · backprop's gradient."""
    model, x, y = _small_problem(key)
    params = model.init(key, dtype=jnp.float64)
    _, grads = backprop(model, "softmax_cross_entropy", params, x, y)
    expected = jax.tree.map(lambda w, g: w - 0.2 * g, params, grads)
    step = train.make_step(model, "softmax_cross_entropy", "sgd", learning_rate=0.2)
    new, _, _ = step(jax.tree.map(jnp.array, params), step.optimizer.init(params), x, y)
    # equal to rounding: XLA may fuse w − η·g into one multiply-add inside the jitted step
    chex.assert_trees_all_close(new, expected, rtol=1e-14, atol=0)


def test_pipelined_evaluation_reads_each_epochs_own_params(key):
    """fit reads epoch e's results while epoch e+1 runs: every record is still epoch e's."""
    model, x, y = _small_problem(key, n=24)

    def run(epochs):
        return train.fit(
            model,
            "softmax_cross_entropy",
            "adam",
            (x, y),
            epochs=epochs,
            batch_size=5,
            key=key,
            learning_rate=0.05,
            progress=False,
        )

    full = run(4)
    for epochs in (1, 2, 3):  # each shorter run ends in a synchronous final epoch
        short = run(epochs)
        assert full.history["train_loss"][epochs - 1] == short.history["train_loss"][-1]
        assert full.history["train_accuracy"][epochs - 1] == short.history["train_accuracy"][-1]


@pytest.mark.parametrize(
    ("epochs", "intervals", "block"),
    [(100, [], 32), (5, [], 5), (100, [10], 10), (100, [3, 2], 1), (100, [50], 25), (9, [64], 32)],
)
def test_epochs_per_call_ends_blocks_on_every_host_event(epochs, intervals, block):
    assert train.epochs._epochs_per_call(epochs, intervals) == block


def test_blocks_of_epochs_give_the_per_epoch_result(key):
    """Epochs scanned inside one call train exactly as one call per epoch does."""
    model, x, y = _small_problem(key, n=24)
    params = model.init(key, dtype=jnp.float64)

    def run(eval_every):
        return train.fit(
            model,
            "softmax_cross_entropy",
            "adam",
            (x, y),
            epochs=7,
            batch_size=5,
            key=key,
            params=params,
            learning_rate=0.05,
            progress=False,
            eval_every=eval_every,
        )

    blocked, per_epoch = run(0), run(1)  # blocks of 7 epochs vs seven 1-epoch calls
    chex.assert_trees_all_close(blocked.params, per_epoch.params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        blocked.history["step_loss"], per_epoch.history["step_loss"], rtol=1e-12
    )
    np.testing.assert_array_equal(blocked.history["epoch"], np.arange(1, 8))


def test_the_progress_bar_hears_every_epoch_inside_a_block_and_changes_nothing(key):
    """progress=True adds a host tick per epoch inside the jitted block; same numbers."""
    ds = data.moons(key, n=64)
    model = MLP((2, 8, 1), activation="tanh")
    heard = []
    train.epochs._listeners.append(heard.append)
    try:
        common = dict(epochs=8, key=key, batch_size=16, eval_every=0, learning_rate=0.1)
        shown = train.fit(model, ds.loss, "sgd", ds, progress=True, **common)
    finally:
        train.epochs._listeners.remove(heard.append)
    silent = train.fit(model, ds.loss, "sgd", ds, progress=False, **common)
    assert train.epochs._epochs_per_call(8, []) == 8  # one block: the ticks came from inside it
    assert sorted(heard) == list(range(1, 9))
    for a, b in zip(jax.tree.leaves(shown), jax.tree.leaves(silent), strict=True):
        np.testing.assert_array_equal(a, b)


def test_multisteps_trains_and_lbfgs_is_refused_by_name(key, compilations):
    """optax.MultiSteps is taken through its gradient_transformation(); a line-search
    method that needs the loss value is refused before anything compiles."""
    ds = data.moons(key, n=32)
    model = MLP((2, 4, 1), activation="tanh")
    common = dict(epochs=2, key=key, batch_size=8, progress=False, eval_every=0)
    multi = train.fit(model, ds.loss, optax.MultiSteps(optax.sgd(0.1), 2), ds, **common)
    assert multi.history["step_loss"].shape == (8,)
    compilations.count = 0
    with pytest.raises(ValueError, match="optimizer: expected a first-order transformation"):
        train.fit(model, ds.loss, optax.lbfgs(), ds, **common)
    assert compilations.count == 0


def test_tqdm_disable_switches_the_bars_off(key, monkeypatch, capsys):
    ds = data.moons(key, n=32)
    model = MLP((2, 4, 1), activation="tanh")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    train.fit(model, ds.loss, "sgd", ds, epochs=2, key=key, learning_rate=0.1, progress=True)
    assert "epochs" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    train.fit(model, ds.loss, "sgd", ds, epochs=2, key=key, learning_rate=0.1, progress=True)
    assert "epochs" in capsys.readouterr().err
