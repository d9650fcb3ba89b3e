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
    # The where-inside-where keeps every order of derivative finite: a tower
    # differentiates this rule once more (forward mode, for its Jacobians), and
    # jax.grad through training once more again.
    x_safe = jnp.where(positive, x, 1)
    return safe_sqrt(x), jnp.where(positive, t / (2 * jnp.sqrt(x_safe)), 0)


def ema(g, m, decay):
    """`(1 - decay) * g + decay * m`, in optax's order of operations."""
    return (1 - decay) * g + decay * m


def bias_correction(moment, decay, count):
    return moment / (1 - decay**count).astype(moment.dtype)
