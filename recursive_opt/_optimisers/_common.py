"""Numerics shared by the optimiser rules."""

import jax
import jax.numpy as jnp


@jax.custom_jvp
def safe_sqrt(x):
    """`jnp.sqrt` whose derivative at 0 is 0 instead of infinity.

    Adam's second moment is exactly 0 at the first step and on coordinates whose
    gradient is always 0; there d sqrt(v)/dv = inf meets a zero cotangent and the
    hypergradient of b2 would be NaN. The forward value is `jnp.sqrt` exactly.
    """
    return jnp.sqrt(x)


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    positive = x > 0
    # `y` through `safe_sqrt` itself, and a where inside the where: every order of
    # derivative stays finite (a tower differentiates this rule in forward mode
    # for its Jacobians, and jax.grad through training differentiates that).
    y = safe_sqrt(x)
    return y, jnp.where(positive, t / (2 * jnp.where(positive, y, 1)), 0)


def ema(g, m, decay):
    """`(1 - decay) * g + decay * m`, in optax's order of operations."""
    return (1 - decay) * g + decay * m


def bias_correction(moment, decay, count):
    return moment / (1 - decay**count).astype(moment.dtype)
