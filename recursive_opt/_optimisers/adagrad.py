import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from .._hyper import Hyper, HyperSpec, declare
from .._optimiser import AbstractOptimiser


class AdaGradState(eqx.Module):
    sum_of_squares: PyTree[Array]


class AdaGrad(AbstractOptimiser):
    """AdaGrad, as `optax.adagrad(lr, initial_accumulator_value, eps)`.

    The accumulator starts at `initial_accumulator_value` (0.1, as in optax and the
    original package) and the update is `-lr * g / sqrt(acc + eps)`. The default
    eps is the original package's 1e-10 (optax's is 1e-7).

    **Arguments:**

    - `lr`: learning rate; tuned, `"log"` by default.
    - `eps`: fixed, `"log"` by default.
    - `initial_accumulator_value`: the accumulator's start (static, >= 0).

    ```python
    tower = ro.Stack(ro.AdaGrad(0.1), ro.SGD(1e-3))
    ```
    """

    lr: Hyper
    eps: Hyper
    initial_accumulator_value: float = eqx.field(static=True)
    uses_params: bool = eqx.field(static=True)

    def __init__(
        self,
        lr: ArrayLike | HyperSpec = 1e-2,
        eps: ArrayLike | HyperSpec = 1e-10,
        initial_accumulator_value: float = 0.1,
    ):
        self.lr = declare("AdaGrad", "lr", lr, "log", True)
        self.eps = declare("AdaGrad", "eps", eps, "log", False)
        if not isinstance(initial_accumulator_value, (int, float)) or not (
            initial_accumulator_value >= 0
        ):
            raise ValueError(
                "AdaGrad: `initial_accumulator_value` must be a number >= 0, got "
                f"{initial_accumulator_value!r}."
            )
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.uses_params = False

    def init_state(self, params):
        acc = self.initial_accumulator_value
        return AdaGradState(jax.tree.map(lambda p: jnp.full_like(p, acc), params))

    def rule(self, grads, state, params, hp):
        acc = jax.tree.map(lambda g, a: g**2 + a, grads, state.sum_of_squares)
        updates = jax.tree.map(
            lambda g, a, eps, lr: (
                -lr * (jnp.where(a > 0, jax.lax.rsqrt(a + eps), 0) * g)
            ),
            grads,
            acc,
            hp["eps"],
            hp["lr"],
        )
        return updates, AdaGradState(acc)
