"""gdjax.convert: round trips between layouts, errors naming the argument, equality with torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, convert

SIZES = (3, 5, 4, 2)


@pytest.fixture
def params():
    return MLP(SIZES, activation="tanh").init(jax.random.key(0), dtype=jnp.float32)


def _equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("as_pairs", [False, True])
def test_in_out_round_trip(params, as_pairs):
    in_out = convert.to_in_out(params, as_pairs=as_pairs)
    w0 = in_out[0][0] if as_pairs else in_out[0]["w"]
    assert w0.shape == (3, 5)
    back = convert.from_in_out(in_out)
    assert _equal(back, params)
    MLP(SIZES).check_params(back)


def test_in_out_computes_the_same_function(params):
    x = jax.random.normal(jax.random.key(1), (7, 3))
    a = x
    for i, (w, b) in enumerate(convert.to_in_out(params, as_pairs=True)):  # JAX example style
        a = a @ w + b
        a = jnp.tanh(a) if i < 2 else a
    np.testing.assert_allclose(a, MLP(SIZES, "tanh").apply(params, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("indices", [None, [0, 3, 7]])
def test_torch_state_dict_round_trip(params, indices):
    sd = convert.to_torch_state_dict(params, layer_indices=indices)
    first = 0 if indices is None else indices[-1]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert f"{first if indices else 4}.weight" in sd
    assert sd["0.weight"].shape == (5, 3)
    assert _equal(convert.from_torch_state_dict(sd), params)


def test_torch_indices_sort_numerically(params):
    sd = convert.to_torch_state_dict(params, layer_indices=[2, 9, 10])
    assert [p["w"].shape for p in convert.from_torch_state_dict(sd)] == [(5, 3), (4, 5), (2, 4)]


class _FakeTensor:
    """Duck-typed like a torch tensor: .detach().cpu().numpy()."""

    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


def test_torch_tensors_are_read_by_duck_typing(params):
    sd = {k: _FakeTensor(v) for k, v in convert.to_torch_state_dict(params).items()}
    assert _equal(convert.from_torch_state_dict(sd), params)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: convert.from_in_out([{"w": np.ones((3, 5))}]), r"params\[0\].*missing \['b'\]"),
        (
            lambda p: convert.from_in_out(
                [(np.ones((3, 5)), np.ones(5)), (np.ones((4, 2)), np.ones(2))]
            ),
            r"params\[1\]\['w'\]: expected shape \(5, 2\).*got \(4, 2\)",
        ),
        (
            lambda p: convert.from_in_out([(np.ones((3, 5)), np.ones(4))]),
            r"params\[0\]\['b'\]: expected a bias of shape \(5,\)",
        ),
        (lambda p: convert.from_in_out([]), r"params: expected a non-empty list"),
        (lambda p: convert.to_in_out({"w": 1}), r"params: expected gdjax params"),
        (
            lambda p: convert.from_torch_state_dict({"0.weight": np.ones((5, 3))}),
            r"expected '0.bias' beside '0.weight'.*bias=True",
        ),
        (
            lambda p: convert.from_torch_state_dict({"net.0.weight": np.ones((5, 3))}),
            r"got key 'net.0.weight'.*removeprefix\('net.'\)",
        ),
        (
            lambda p: convert.from_torch_state_dict({"0.running_mean": np.ones(3)}),
            r"state_dict: expected the keys of an nn.Sequential",
        ),
        (
            lambda p: convert.from_torch_state_dict(
                {
                    "0.weight": np.ones((5, 3)),
                    "0.bias": np.ones(5),
                    "2.weight": np.ones((2, 4)),
                    "2.bias": np.ones(2),
                }
            ),
            r"state_dict\['2.weight'\]: expected in_features = 5.*got shape \(2, 4\)",
        ),
        (
            lambda p: convert.from_torch_state_dict({"0.weight": np.ones((5, 3)), "0.bias": "x"}),
            r"state_dict\['0.bias'\]: expected a floating array",
        ),
        (lambda p: convert.from_torch_state_dict({}), r"state_dict: expected .* got an empty"),
        (
            lambda p: convert.to_torch_state_dict(p, layer_indices=[0, 0, 2]),
            r"layer_indices: expected 3 strictly increasing",
        ),
    ],
)
def test_errors_name_the_argument(params, call, match):
    with pytest.raises(ValueError, match=match):
        call(params)


def test_torch_module_gives_the_same_outputs(params):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 4),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 2),
    )
    x = np.asarray(jax.random.normal(jax.random.key(1), (9, 3)), np.float32)
    # torch → gdjax
    converted = convert.from_torch_state_dict(net.state_dict())
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        MLP(SIZES, "tanh").apply(converted, x), expected, rtol=1e-5, atol=1e-6
    )
    # gdjax → torch
    net.load_state_dict(
        {k: torch.from_numpy(v) for k, v in convert.to_torch_state_dict(params).items()}
    )
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, MLP(SIZES, "tanh").apply(params, x), rtol=1e-5, atol=1e-6)
