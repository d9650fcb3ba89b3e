"""Truncated hypergradients over windows of k steps: `Unrolled`."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from .._custom_types import HyperParams
from ._base import AbstractHypergradient
from .real_time import (
    Tangent,
    contract,
    one_tangent_each,
    propagate,
    zero_tangent,
)


class Window(eqx.Module):
    """The tangent since the window began, the sum of the window's
    hypergradients so far, and how many steps the window has taken."""

    tangent: Tangent
    total: HyperParams
    steps: Int[Array, ""]


class Unrolled(AbstractHypergradient):
    """Truncated hypergradients: every `k` steps, level 1's hyperparameters get
    the gradient of the mean loss over those k steps, with the hyperparameters
    held fixed over the window (the style of learned_optimization).

    The levels above level 1 step only at the end of each window. The gradient
    through the k steps is computed in forward mode, one Hessian-vector product
    per step and tuned hyperparameter, so memory does not grow with k and equals
    backpropagation through the window written out by hand. It needs the loss:
    drive the tower with `tower.step(loss_fn, params, state, *batch)`. The mean
    is over the losses after each of the window's steps, on that step's batch
    (or on its `meta_batch`, a held-out one).

    **Arguments:**

    - `k`: the window's length in steps.

    ```python
    tower = ro.Stack[3](ro.Adam(), hypergradient=ro.Unrolled(10))
    params, state, loss = tower.step(loss_fn, params, state, x, y)
    ```
    """

    k: int = eqx.field(static=True)

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Unrolled(k) needs an integer k >= 1, got {k!r}.")
        self.k = k

    @property
    def needs_loss(self) -> bool:
        return True

    def check(self, opt):
        one_tangent_each(opt, f"Unrolled({self.k})", "another scheme")

    def init(self, opt, params, state, scaled=False):
        tangent = zero_tangent(opt, params, state)
        total = jax.tree.map(jnp.zeros_like, contract(opt, params, tangent.params))
        return Window(tangent, total, jnp.zeros([], jnp.int32))

    def _sum(self, opt, record, grads):
        inner = contract(opt, grads, record.tangent.params)
        return jax.tree.map(jnp.add, record.total, inner)

    def hypergrad(self, opt, state, record, grads):
        return jax.tree.map(lambda x: x / self.k, self._sum(opt, record, grads))

    def upper_steps(self, record):
        return record.steps == self.k

    def directions(self, record):
        return record.tangent.params

    def step(
        self, opt, grads, state, params, record, hvps=None, scale=None, cotangent=None
    ):
        # A full window ends here: the levels above have stepped, and a new one
        # begins from Z = 0 with the new hyperparameters.
        full = record.steps == self.k
        total = self._sum(opt, record, grads if cotangent is None else cotangent)
        reset = lambda t: jax.tree.map(  # noqa: E731
            lambda x: jnp.where(full, jnp.zeros_like(x), x), t
        )
        tangent, total = reset(record.tangent), reset(total)
        # H·Z of the reset tangent is H·0 = 0.
        hvps = reset(hvps)
        updates, new_state, tangent = propagate(
            opt, grads, state, params, tangent, hvps, 1.0, scale
        )
        steps = jnp.where(full, 0, record.steps) + 1
        return updates, new_state, Window(tangent, total, steps)
