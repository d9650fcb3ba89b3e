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
        updates, state, _ = self.rule_jacobian(grads, state, params, hp, ())
        return updates, state

    def rule_jacobian(self, grads, state, params, hp, names):
        # One pass computes the update and, in closed form, its derivative with
        # respect to each named hyperparameter: they share the moments, the square
        # root and the denominator (generic forward mode re-evaluates the rule per
        # name, which dominates a tower's cost on large models).
        count = optax.safe_increment(state.count)
        wd = hp.get("weight_decay") if self.weight_decay is not None else None

        def leaf(g, m0, v0, p, lr, b1, b2, eps, wd):
            m, v = ema(g, m0, b1), ema(g**2, v0, b2)
            m_hat, v_hat = bias_correction(m, b1, count), bias_correction(v, b2, count)
            root = safe_sqrt(v_hat)
            direction = m_hat / (root + eps)
            if wd is not None:
                direction = direction + wd * p
            columns = {}
            if names:
                denom = root + eps
                t = count.astype(g.dtype)
                c1, c2 = 1 - b1**count, 1 - b2**count
                for name in names:
                    if name == "lr":
                        col = -direction
                    elif name == "b1":
                        # d m / d b1 = m0 - g = (m - g) / b1: written with the new
                        # moment so that the old one is dead once the new one is
                        # written (else XLA copies it to update it in place).
                        dm_hat = (m - g) / b1 / c1 + m * t * b1 ** (count - 1) / c1**2
                        col = -lr * dm_hat / denom
                    elif name == "b2":
                        dv_hat = (v - g**2) / b2 / c2 + v * t * b2 ** (
                            count - 1
                        ) / c2**2
                        positive = v_hat > 0
                        droot = jnp.where(
                            positive, dv_hat / (2 * jnp.where(positive, root, 1)), 0
                        )
                        col = lr * m_hat / denom**2 * droot
                    elif name == "eps":
                        col = lr * m_hat / denom**2
                    else:  # weight_decay
                        col = -lr * p
                    columns[name] = col
            return -lr * direction, m, v, columns

        if params is None:
            params = jax.tree.map(lambda _: None, grads)
        if wd is None:
            wd = jax.tree.map(lambda _: None, grads)
        out = jax.tree.map(
            leaf,
            grads,
            state.mu,
            state.nu,
            params,
            hp["lr"],
            hp["b1"],
            hp["b2"],
            hp["eps"],
            wd,
            is_leaf=lambda x: x is None,
        )
        is_out = lambda x: isinstance(x, tuple)  # noqa: E731
        pick = lambda i: jax.tree.map(lambda o: o[i], out, is_leaf=is_out)  # noqa: E731
        columns = {
            n: jax.tree.map(lambda o: o[3][n], out, is_leaf=is_out) for n in names
        }
        return pick(0), AdamState(count, pick(1), pick(2)), columns
