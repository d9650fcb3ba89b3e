from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from .._hyper import Hyper, HyperSpec, declare, is_zero
from .._optimiser import AbstractElementwiseOptimiser


class SGDState(eqx.Module):
    trace: PyTree[Array] | None  # momentum buffer; None without momentum


class SGD(AbstractElementwiseOptimiser):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Matches `optax.sgd(lr, momentum, nesterov)`: the buffer is `g + momentum * buf`
    (the first buffer is `g`) and the update is `-lr * buf` (Nesterov:
    `-lr * (g + momentum * buf)`).

    **Arguments:**

    - `lr`: learning rate; tuned, `"log"` transform by default.
    - `momentum`: 0 (the default) keeps no buffer and tunes nothing; otherwise tuned
        with the `"logit"` transform by default.
    - `nesterov`: Nesterov momentum (static).

    ```python
    opt = ro.SGD(0.1, momentum=0.9)
    state = opt.init(params)
    updates, state = opt.update(grads, state)
    ```
    """

    lr: Hyper
    momentum: Hyper | None
    nesterov: bool = eqx.field(static=True)
    uses_params: bool = eqx.field(static=True)
    recompute_jacobian: ClassVar[bool] = True  # columns are products and sums
    adaptive: ClassVar[bool] = False  # its step is lr x the (averaged) gradient

    def __init__(
        self,
        lr: ArrayLike | HyperSpec = 1e-2,
        momentum: ArrayLike | HyperSpec = 0.0,
        nesterov: bool = False,
    ):
        self.lr = declare("SGD", "lr", lr, "log", True)
        if is_zero(momentum):
            self.momentum = None
        else:
            self.momentum = declare("SGD", "momentum", momentum, "logit", True)
        if nesterov and self.momentum is None:
            raise ValueError("SGD: `nesterov=True` needs a non-zero `momentum`.")
        self.nesterov = bool(nesterov)
        self.uses_params = False

    def init_state(self, params):
        if self.momentum is None:
            return SGDState(None)
        return SGDState(jax.tree.map(jnp.zeros_like, params))

    def rule(self, grads, state, params, hp):
        lr = hp["lr"]
        if self.momentum is None:
            return jax.tree.map(lambda g, a: -a * g, grads, lr), SGDState(None)
        mom = hp["momentum"]
        trace = jax.tree.map(lambda g, t, m: g + m * t, grads, state.trace, mom)
        direction = trace
        if self.nesterov:
            direction = jax.tree.map(lambda g, t, m: g + m * t, grads, trace, mom)
        return jax.tree.map(lambda d, a: -a * d, direction, lr), SGDState(trace)

    def columns_from_state(self, names):
        # With (plain) momentum, d update / d lr is minus the buffer just written.
        return self.momentum is not None and not self.nesterov and names == ("lr",)

    def jacobian_after(self, grads, state, params, hp, names):
        # In closed form from the step's gradients and the buffer it wrote:
        # d trace / d m = t0 = (trace - g) / m.
        lr = hp["lr"]
        if self.momentum is None:
            return {"lr": jax.tree.map(jnp.negative, grads)}
        mom, trace = hp["momentum"], state.trace
        d_trace = jax.tree.map(lambda t, g, m: (t - g) / m, trace, grads, mom)
        if self.nesterov:
            direction = jax.tree.map(lambda g, t, m: g + m * t, grads, trace, mom)
            # d/dm of g + m * (g + m * t0) = trace + m * t0
            d_direction = jax.tree.map(lambda t, dt, m: t + m * dt, trace, d_trace, mom)
        else:
            direction, d_direction = trace, d_trace
        columns = {
            "lr": jax.tree.map(jnp.negative, direction),
            "momentum": jax.tree.map(lambda d, a: -a * d, d_direction, lr),
        }
        return {n: columns[n] for n in names}
