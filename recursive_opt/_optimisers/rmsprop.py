import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from .._hyper import Hyper, HyperSpec, declare
from .._optimiser import AbstractOptimiser
from ._common import ema


class RMSPropState(eqx.Module):
    nu: PyTree[Array]


class RMSProp(AbstractOptimiser):
    """RMSProp, as `optax.rmsprop(lr, decay, eps)`: eps inside the square root.

    The second moment starts at 0 and is not bias-corrected; the update is
    `-lr * g / sqrt(nu + eps)`.

    **Arguments:**

    - `lr`: learning rate; tuned, `"log"` by default (the original package uses
        `"square"`).
    - `decay`: second-moment decay; tuned, `"logit"` by default.
    - `eps`: fixed, `"log"` by default.

    ```python
    tower = ro.Stack(ro.RMSProp(1e-3), ro.Adam(1e-4))
    ```
    """

    lr: Hyper
    decay: Hyper
    eps: Hyper
    uses_params: bool = eqx.field(static=True)

    def __init__(
        self,
        lr: ArrayLike | HyperSpec = 1e-2,
        decay: ArrayLike | HyperSpec = 0.99,
        eps: ArrayLike | HyperSpec = 1e-8,
    ):
        self.lr = declare("RMSProp", "lr", lr, "log", True)
        self.decay = declare("RMSProp", "decay", decay, "logit", True)
        self.eps = declare("RMSProp", "eps", eps, "log", False)
        self.uses_params = False

    def init_state(self, params):
        return RMSPropState(jax.tree.map(jnp.zeros_like, params))

    def rule(self, grads, state, params, hp):
        nu = jax.tree.map(lambda g, v, d: ema(g**2, v, d), grads, state.nu, hp["decay"])
        updates = jax.tree.map(
            lambda g, v, eps, lr: -lr * (jax.lax.rsqrt(v + eps) * g),
            grads,
            nu,
            hp["eps"],
            hp["lr"],
        )
        return updates, RMSPropState(nu)
