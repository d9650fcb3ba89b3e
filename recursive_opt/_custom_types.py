from typing import Any

from jaxtyping import Array, Float, PyTree

Params = PyTree[Float[Array, "..."]]
Updates = PyTree[Float[Array, "..."]]
Grads = PyTree[Float[Array, "..."]]
# Raw (unconstrained) values of the hyperparameters one level tunes, by name.
HyperParams = dict[str, PyTree[Float[Array, "..."]]]
OptState = Any
