import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Int, PyTree

from .._hyper import Hyper, HyperSpec, declare, is_zero
from .._optimiser import AbstractOptimiser
from ._common import bias_correction, ema, safe_sqrt


class AdamState(eqx.Module):
    count: Int[Array, ""]
    mu: PyTree[Array]
    nu: PyTree[Array]


class Adam(AbstractOptimiser):
    """Adam, and AdamW when `weight_decay > 0`.

    Matches `optax.adam(lr, b1, b2, eps)` (and `optax.adamw(..., weight_decay)`):
    moments start at 0, are bias-corrected, eps is added outside the square root,
    and decoupled weight decay adds `weight_decay * params` to the direction before
    scaling by `-lr`. (The original PyTorch package starts the second moment at eps
    instead of 0.)

    **Arguments:**

    - `lr`: learning rate; tuned, `"log"` by default.
    - `b1`, `b2`: moment decay rates; tuned, `"logit"` by default.
    - `eps`: fixed, `"log"` by default.
    - `weight_decay`: 0 (the default) switches it off; otherwise fixed, `"log"`.

    ```python
    tower = ro.Stack[3](ro.Adam(1e-3))
    ```
    """

    lr: Hyper
    b1: Hyper
    b2: Hyper
    eps: Hyper
    weight_decay: Hyper | None
    uses_params: bool = eqx.field(static=True)

    def __init__(
        self,
        lr: ArrayLike | HyperSpec = 1e-3,
        b1: ArrayLike | HyperSpec = 0.9,
        b2: ArrayLike | HyperSpec = 0.999,
        eps: ArrayLike | HyperSpec = 1e-8,
        weight_decay: ArrayLike | HyperSpec = 0.0,
    ):
        self.lr = declare("Adam", "lr", lr, "log", True)
        self.b1 = declare("Adam", "b1", b1, "logit", True)
        self.b2 = declare("Adam", "b2", b2, "logit", True)
        self.eps = declare("Adam", "eps", eps, "log", False)
        if is_zero(weight_decay):
            self.weight_decay = None
        else:
            self.weight_decay = declare(
                "Adam", "weight_decay", weight_decay, "log", False
            )
        self.uses_params = self.weight_decay is not None

    def init_state(self, params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def rule(self, grads, state, params, hp):
        mu = jax.tree.map(ema, grads, state.mu, hp["b1"])
        nu = jax.tree.map(lambda g, v, b2: ema(g**2, v, b2), grads, state.nu, hp["b2"])
        count = optax.safe_increment(state.count)
        mu_hat = jax.tree.map(lambda m, b1: bias_correction(m, b1, count), mu, hp["b1"])
        nu_hat = jax.tree.map(lambda v, b2: bias_correction(v, b2, count), nu, hp["b2"])
        direction = jax.tree.map(
            lambda m, v, eps: m / (safe_sqrt(v) + eps), mu_hat, nu_hat, hp["eps"]
        )
        if self.weight_decay is not None:
            direction = jax.tree.map(
                lambda d, p, wd: d + wd * p, direction, params, hp["weight_decay"]
            )
        updates = jax.tree.map(lambda d, lr: -lr * d, direction, hp["lr"])
        return updates, AdamState(count, mu, nu)
