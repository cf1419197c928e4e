"""The seed tutorial's worked examples, step by step, each hand value beside jax.grad's.

    python scripts/seed_example.py            # float64, the tutorial's numbers
    python scripts/seed_example.py --float32  # the same in float32

Part 1 is the chain L = g(f(x, w1), w2) ("Running the Numbers: A Real Example");
part 2 the one-neuron-per-layer sigmoid network, checked against jax.grad and
against gdjax.backprop on MLP(sizes=(1, 1, 1)). Exits non-zero if any hand
value disagrees with autodiff.
"""

from __future__ import annotations

import sys

import jax

from gdjax import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--float32", action="store_true", help="compute in float32")
    args = parser.parse_args(argv)
    if not args.float32:
        jax.config.update("jax_enable_x64", True)

    import jax.numpy as jnp

    from gdjax import MLP, backprop, scalar

    dtype = jnp.float32 if args.float32 else jnp.float64
    rtol = 1e-6 if args.float32 else 1e-14
    mismatches = []

    def row(label: str, hand, auto=None) -> None:
        hand = float(hand)
        if auto is None:
            print(f"  {label:<34}{hand:>12.6g}")
            return
        auto = float(auto)
        ok = abs(hand - auto) <= rtol * max(1.0, abs(auto))
        if not ok:
            mismatches.append(label)
        print(f"  {label:<34}{hand:>12.6g}{auto:>14.6g}   {'✓' if ok else '✗ MISMATCH'}")

    ex = scalar.SEED_CHAIN
    w1, w2 = jnp.asarray(ex.w1, dtype), jnp.asarray(ex.w2, dtype)
    print(f"Part 1 — the chain L = g(f(x, w1), w2)   ({jnp.dtype(dtype).name})")
    print(
        f"  x = {ex.x}, b1 = {ex.b1}, b2 = {ex.b2}, w1 = {ex.w1}, w2 = {ex.w2}, "
        f"L_target = {ex.target}"
    )
    print(f"  {'':<34}{'by hand':>12}{'jax.grad':>14}")
    z, L = scalar.chain_forward(w1, w2)
    row("z = x·w1 + b1", z)
    row("L = z·w2 + b2", L)
    row("E = ½(L − L_target)²", scalar.chain_error(L, ex.target))
    dw1, dw2 = scalar.chain_grads(w1, w2)
    auto_dw1, auto_dw2 = jax.grad(lambda a, b: scalar.chain_forward(a, b)[1], argnums=(0, 1))(
        w1, w2
    )
    row("∂L/∂w1 = w2·x", dw1, auto_dw1)
    row("∂L/∂w2 = z", dw2, auto_dw2)
    for alpha in (0.2, 0.1):
        new_w1, new_w2 = scalar.chain_step(w1, w2, jnp.asarray(alpha, dtype))
        z, L = scalar.chain_forward(new_w1, new_w2)
        print(f"  step w ← w + α·∂L/∂w with α = {alpha}:")
        row("  w1", new_w1, w1 + alpha * auto_dw1)
        row("  w2", new_w2, w2 + alpha * auto_dw2)
        row("  z", z)
        row(f"  L   (target {ex.target})", L)

    print("\nPart 2 — the sigmoid network x → σ(w1 x + b1) → σ(w2 a1 + b2),  C = ½(y − a2)²")
    p = scalar.SigmoidNet(*(jnp.asarray(v, dtype) for v in (0.5, 0.1, -1.2, 0.3)))
    x, y = jnp.asarray(1.5, dtype), jnp.asarray(0.8, dtype)
    print(
        f"  w1 = {float(p.w1)}, b1 = {float(p.b1)}, w2 = {float(p.w2)}, b2 = {float(p.b2)}, "
        f"x = {float(x)}, y = {float(y)}"
    )
    fwd = scalar.sigmoid_net_forward(p, x)
    for name, value in fwd._asdict().items():
        row(name, value)
    cost, grads, (delta1, delta2) = scalar.sigmoid_net_backprop(p, x, y)
    auto = jax.grad(scalar.sigmoid_net_cost)(p, x, y)
    model = MLP(sizes=(1, 1, 1), activation="sigmoid", output_activation="sigmoid")
    _, mlp_grads = backprop(
        model, "mse", scalar.sigmoid_net_to_mlp_params(p, dtype), x.reshape(1, 1), y.reshape(1, 1)
    )
    row("C = ½(y − a2)²", cost)
    row("δ2 = −(y − a2)·σ'(z2)", delta2)
    row("δ1 = δ2·w2·σ'(z1)", delta1)
    print(f"  {'':<34}{'by hand':>12}{'jax.grad':>14}")
    row("∂C/∂w2 = δ2·a1", grads.w2, auto.w2)
    row("∂C/∂b2 = δ2", grads.b2, auto.b2)
    row("∂C/∂w1 = δ1·x", grads.w1, auto.w1)
    row("∂C/∂b1 = δ1", grads.b1, auto.b1)
    print(f"  {'':<34}{'by hand':>12}{'gdjax MLP':>14}")
    row("∂C/∂w1 (MLP(1, 1, 1) backprop)", grads.w1, mlp_grads[0]["w"][0, 0])
    row("∂C/∂w2 (MLP(1, 1, 1) backprop)", grads.w2, mlp_grads[1]["w"][0, 0])

    if mismatches:
        print(f"\n{len(mismatches)} hand value(s) disagree with autodiff: {mismatches}")
        return 1
    print("\nEvery hand-derived value equals autodiff.")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
