"""Error bounds from float32 rounding, for tests that compare a computed value with a recorded one
or with an independent computation of the same formula.

The same formula gives slightly different float32 results on different CPUs, and with oneDNN on or
off: sums are taken in other orders, products are fused (FMA) or not, and sin, cos and exp come
from other libraries (MKL's vector maths per instruction set, SLEEF, glibc). A tolerance must
therefore follow from the computation, never from one machine's output. The model used here is
the standard first-order one: every float32 operation rounds with a relative error of at most
u = 2**-24, so a chain of n operations is within n * u * M of the exact result, where M bounds the
magnitudes along the way (for a sum or dot product, the sum of the absolute values of its terms);
two implementations are within twice that.
"""
from __future__ import annotations

import numpy as np
import torch

U = 2.0 ** -24  # float32 unit roundoff: half an ulp of 1
EPS = 2.0 ** -23  # float32 machine epsilon: one ulp of 1

# Deep networks (conv/matmul layers with up to a few thousand taps, ~20 layers deep): a layer's
# output moves by ~sqrt(K) * u of its activation scale when its sums are reordered (K <= 2304:
# <= 50u), and that adds up over the layers with gain ~1 (as a random walk, ~220u). The bound is
# NETWORK_ATOL * scale (335u * scale), scale = the largest magnitude of the compared output
# (at least 1). Measured across the CPU paths of docs/DEVELOPING.md: <= 47u * scale.
NETWORK_ATOL = 2e-5


def network_atol(reference) -> float:
    """Absolute tolerance for a network output compared with a recorded one (see NETWORK_ATOL)."""
    ref = reference.detach().double().cpu().numpy() if torch.is_tensor(reference) else np.asarray(reference)
    return NETWORK_ATOL * max(1.0, float(np.abs(ref).max()))


def chain_bound(magnitude, operations: int) -> np.ndarray:
    """Bound on the difference between two float32 evaluations of a chain of ``operations``
    roundings whose intermediate magnitudes are bounded by ``magnitude`` (elementwise)."""
    mag = magnitude.detach().double().cpu().numpy() if torch.is_tensor(magnitude) else np.asarray(magnitude, float)
    return 2 * operations * U * mag


def assert_within(actual, expected, bound, what: str = "") -> None:
    """``|actual - expected| <= bound`` elementwise, with the worst element named on failure."""
    def arr(x):
        return x.detach().double().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, np.float64)

    a, e = arr(actual), arr(expected)
    b = np.broadcast_to(arr(bound), a.shape)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    diff = np.abs(a - e)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / b)
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
    assert ratio.size == 0 or ratio[worst] <= 1, (
        f"{what}: |difference| {diff[worst]:.3g} exceeds the rounding bound {b[worst]:.3g} at {tuple(map(int, worst))} "
        f"({a[worst]!r} vs {e[worst]!r})")


# LivePortrait's keypoint composition scale * (kp @ R + exp) + t: per output entry, a relative
# rotation R = R_d @ R_0^T @ R_s takes two 3x3 products (2 x 5 roundings), kp @ R five more, then
# + exp, x scale, + t, and the pipeline re-associates a few of these (x_s + (x - x_s) * m, ...):
# <= 24 roundings, each relative to M = |scale| * (sum_j |kp_j| + |exp|) + |t| (|R_ij| <= 1).
KEYPOINT_OPERATIONS = 24


def keypoint_bound(scale: torch.Tensor, kp: torch.Tensor, exp_magnitude: torch.Tensor, t: torch.Tensor,
                   operations: int = KEYPOINT_OPERATIONS) -> np.ndarray:
    """Bound ``[B,21,3]`` for two float32 evaluations of ``scale * (kp @ R + exp) + t``; ``scale``
    ``[B,1]``, ``kp`` ``[B,21,3]``, ``exp_magnitude`` ``[B,21,3]`` (the sum of |terms| making up the
    expression), ``t`` ``[B,3]``."""
    mag = scale.abs()[..., None] * (kp.abs().sum(-1, keepdim=True) + exp_magnitude.abs()) + t.abs()[:, None, :]
    return chain_bound(mag, operations)
