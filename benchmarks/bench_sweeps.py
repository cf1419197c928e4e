"""sweeps: points/s of a 2-D loss-landscape sweep against one point per jitted call.

See :func:`sweeps` for the method; cases in :data:`SWEEP_CASES`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from common import Context, Row, matmul_gflops, median, paired_ratio, roofline_size, timed

import gdjax
from gdjax import MLP

# (name, sizes, activation, loss, examples, grid in full mode, grid in quick mode)
SWEEP_CASES = (
    ("large", (784, 512, 512, 10), "relu", "softmax_cross_entropy", 2048, 21, None),
    ("large", (784, 512, 512, 10), "relu", "softmax_cross_entropy", 2048, 51, None),
    ("large (quick)", (64, 128, 128, 10), "relu", "softmax_cross_entropy", 512, None, 5),
    ("small", (2, 16, 16, 1), "tanh", "mse", 1000, 51, 51),
)


def _sweep_problem(sizes, activation, loss, examples):
    """Glorot params, two filter-normalised directions, random normal x and random targets."""
    model = MLP(sizes, activation=activation)
    keys = jax.random.split(jax.random.key(0), 5)
    params = model.init(keys[0])
    d1 = gdjax.landscape.filter_normalized_direction(keys[1], params)
    d2 = gdjax.landscape.filter_normalized_direction(keys[2], params)
    x = jax.random.normal(keys[3], (examples, sizes[0]), jnp.float32)
    if loss == "mse":
        y = jax.random.normal(keys[4], (examples, sizes[-1]), jnp.float32)
    else:
        y = jax.random.randint(keys[4], (examples,), 0, sizes[-1])
    return model, params, d1, d2, x, y


def _one_point(f):
    """The reference method's unit of work, jitted: ``f(θ + α d1 + β d2, x, y)`` for one (α, β)."""

    @jax.jit
    def point(params, d1, d2, a, b, x, y):
        return f(jax.tree.map(lambda p, u, v: p + a * u + b * v, params, d1, d2), x, y)

    return point


def sweeps(ctx: Context) -> list[Row]:
    """Points/s of a 2-D sweep against a loop of one point per jitted call (Li et al.'s method).

    The loop is the reference code's method: one jitted call per grid point
    computing ``C(θ + α d1 + β d2)``, a Python loop over the grid, synced at the
    end. Against it: ``sweep_2d`` of ``gdjax.objective(model, loss)`` (the
    generic path: every point displaces all params and runs the whole net) and
    of ``gdjax.landscape.mlp_loss(model, loss)`` (the fast path: ``x wᵀ, x D1ᵀ,
    x D2ᵀ`` once, then layers 2 … L per point), each with its defaults (vmap
    width and chunk size), and for the small case also with the whole grid as
    one chunk. A repeat times every variant once, in an order rotated each
    repeat, and the matmul roofline (median of 3 products) just before it
    (3 repeats for the large case, 1 for its 51×51 grid on a CPU, where its
    loop alone takes ~45 s; ``max(3, --repeats)`` otherwise); ratios are per
    repeat (loop time / sweep time) and the rows give medians. The roofline
    fraction counts nominal FLOPs, 2·examples·Σ n_in·n_out per point, so the
    fast path, which skips most of layer 1, may pass 100 %.

    The small case also gets an *activation floor*: the time of the jitted
    activation alone over every hidden unit of every example at every point
    (points × examples × Σ hidden sizes values). Any method, the loop
    included, computes those values, so loop time / floor bounds the speed-up
    that batching can buy.
    """
    landscape = gdjax.landscape
    rows = []
    for name, sizes, activation, loss, examples, grid_full, grid_quick in SWEEP_CASES:
        grid = grid_quick if ctx.quick else grid_full
        if grid is None:
            continue
        # the large case's loop takes ~8 s (21x21) or ~45 s (51x51) a repeat on 2 CPU cores
        repeats = max(3, ctx.repeats)
        if name == "large":
            repeats = 3 if grid < 51 or jax.default_backend() != "cpu" else 1
        model, params, d1, d2, x, y = _sweep_problem(sizes, activation, loss, examples)
        alphas = betas = np.linspace(-1.0, 1.0, grid)
        generic = gdjax.objective(model, loss)
        fast = landscape.mlp_loss(model, loss)

        point = _one_point(generic)
        coeffs = [(np.float32(a), np.float32(b)) for a in alphas for b in betas]

        def loop(point=point, params=params, d1=d1, d2=d2, x=x, y=y, coeffs=coeffs):
            return [point(params, d1, d2, a, b, x, y) for a, b in coeffs]

        def sweep(f, chunk_size=None, params=params, d1=d1, d2=d2, x=x, y=y, alphas=alphas):
            return lambda: landscape.sweep_2d(
                f, params, d1, d2, alphas, alphas, x, y, chunk_size=chunk_size
            )

        variants = {
            "loop, 1 point/call": loop,
            "sweep_2d, objective (generic)": sweep(generic),
            "sweep_2d, mlp_loss (fast path)": sweep(fast),
        }
        if name == "small":
            variants["sweep_2d, mlp_loss, 1 chunk"] = sweep(fast, chunk_size=grid * grid)
        if name == "large" and grid >= 51 and jax.default_backend() == "cpu":
            del variants["sweep_2d, objective (generic)"]  # ~45 s; its rate is the 21×21 one
        values = {v: np.asarray(jax.block_until_ready(fn())).ravel() for v, fn in variants.items()}
        ref = values["loop, 1 point/call"]
        errors = {v: float(np.max(np.abs(val - ref) / np.abs(ref))) for v, val in values.items()}

        times: dict[str, list[float]] = {v: [] for v in variants}
        peaks = []
        names = list(variants)
        for r in range(repeats):
            peaks.append(median(matmul_gflops(*(roofline_size(ctx),) * 3, 3)[0]))
            turn = r % len(names)
            for v in names[turn:] + names[:turn]:
                times[v].append(timed(variants[v]))

        points = grid * grid
        flops = 2.0 * examples * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        peak = median(peaks)
        case = f"{name} {list(sizes)} {activation}, {examples} ex, {grid}x{grid}"
        widths = {
            "generic": landscape.default_vmap_width(generic, params, x, y),
            "fast": landscape.default_vmap_width(fast, params, x, y),
        }
        info = {
            "sizes": list(sizes),
            "activation": activation,
            "loss": loss,
            "examples": examples,
            "grid": [grid, grid],
            "nominal_flops_per_point": flops,
            "default_vmap_width": widths,
            "roofline_gflops_per_repeat": peaks,
            "max_rel_diff_vs_loop": errors,
        }
        for v in names:
            rate = [points / t for t in times[v]]
            note = f"{points} points; {errors[v]:.1e} max rel. diff. from the loop"
            rows.append(Row("sweeps", f"{case}: {v}", median(rate), "points/s", note, rate, info))
            info = {}
        loop_t = times["loop, 1 point/call"]
        for v in names[1:]:
            r = paired_ratio(loop_t, times[v])
            rows.append(
                Row(
                    "sweeps",
                    f"{name} {grid}x{grid}: {v} / loop",
                    median(r),
                    "ratio",
                    "loop time / sweep time per repeat",
                    r,
                )
            )
        for v in names:
            frac = [points * flops / t / 1e9 / p for t, p in zip(times[v], peaks, strict=True)]
            note = f"nominal {flops / 1e9:.3g} GFLOP/point; roofline {peak:.0f} GFLOP/s (median)"
            rows.append(
                Row(
                    "sweeps",
                    f"{name} {grid}x{grid}: roofline: {v}",
                    median(frac),
                    "fraction",
                    note,
                    frac,
                )
            )
        if name == "small":
            rows.extend(_activation_floor(sizes, activation, examples, points, loop_t, repeats))
    return rows


def _activation_floor(sizes, activation, examples, points, loop_t, repeats) -> list[Row]:
    """Seconds of σ alone over points × examples × Σ hidden sizes values; loop time / that.

    One point's values (examples × Σ hidden, a few hundred KiB) stay in cache and
    are shifted by a tiny per-point constant, so the figure is σ's arithmetic, not
    memory traffic: a floor for any method.
    """
    sigma = gdjax.activations.get(activation).fn
    z = jax.random.normal(jax.random.key(0), (examples, sum(sizes[1:-1])), jnp.float32)

    @jax.jit
    def all_points(z):
        def one(i, acc):
            return acc + jnp.sum(sigma(z + i.astype(z.dtype) * 1e-7))

        return jax.lax.fori_loop(0, points, one, jnp.zeros((), z.dtype))

    count = points * z.size
    jax.block_until_ready(all_points(z))
    floor = [timed(lambda: all_points(z)) for _ in range(max(3, repeats))]
    bound = [t / median(floor) for t in loop_t]
    note = f"{activation} (+ a sum) over {count:.3g} in-cache values: what every method computes"
    return [
        Row("sweeps", f"small: {activation} floor", median(floor), "s", note, floor),
        Row(
            "sweeps",
            "small: loop / floor",
            median(bound),
            "ratio",
            "the most any batching of the small case can gain over the loop",
            bound,
        ),
    ]
