"""roofline: float32 matmul throughput, the device's practical peak, measured in this run.

The n³ product (n = 2048, 512 with ``--quick``) is the roofline every other family's
fractions refer to (they time it again inside their own rounds); the 128×256×256
product is the training section's largest GEMM, for comparison.
"""

from __future__ import annotations

from common import Context, Row, matmul_gflops, median, roofline_size


def roofline(ctx: Context) -> list[Row]:
    """float32 matmul throughput: the device's practical peak, measured in this run."""
    n = roofline_size(ctx)
    shapes = [
        ((n, n, n), "the roofline; later sections time it again inside their own rounds"),
        ((128, 256, 256), "the largest GEMM of the training step (B=128), for comparison"),
    ]
    rows = []
    for (m, k, p), note in shapes:
        gflops, inner = matmul_gflops(m, k, p, max(3, ctx.repeats))
        info = {"m": m, "k": k, "n": p, "products_per_repeat": inner}
        case = f"matmul {m}x{k} @ {k}x{p} f32"
        rows.append(Row("roofline", case, median(gflops), "GFLOP/s", note, gflops, info))
    return rows
