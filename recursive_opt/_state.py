"""The state of a tower: its levels' optimisers, states and records, packed."""

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PyTree

from ._custom_types import OptState
from ._hyper import TRANSFORMS, clip, hyper_fields, values
from ._optimiser import AbstractOptimiser
from ._pack import Packed, pack, unpack


class Contents(eqx.Module):
    opts: tuple[AbstractOptimiser, ...]
    states: tuple[OptState, ...]
    saved: tuple[Any, ...]  # each level's record for its hypergradient
    count: Int[Array, ""]


class TowerState(eqx.Module):
    """The state of a tower; its pytree structure never changes between steps.

    Read it through `ro.hyperparams(state)`, or these properties. Untied:
    `opts[k]`, `states[k]` and `saved[k]` belong to level k+1 (bottom first), and
    `opts[k]` holds that level's *current* hyperparameters; the top level saves
    nothing (nothing differentiates its update). Tied: `opts` holds the one shared
    optimiser, `states`/`saved` its application to the model and to its own
    hyperparameters. `count` is the number of steps taken. Internally the model's
    parameters are the list of their leaves, so the state does not depend on how a
    framework wraps them; small arrays are packed into a few flat vectors (see
    `_pack.py`).
    """

    packed: Packed
    depth: int = eqx.field(static=True)
    tied: bool = eqx.field(static=True)
    # Shapes of the parameters' leaves. Their treedef is only for display: Flax NNX
    # initialises with `Param`-wrapped arrays and updates with plain ones.
    param_shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    param_treedef: Any = eqx.field(static=True)

    @property
    def contents(self) -> Contents:
        return unpack(self.packed)

    @property
    def opts(self) -> tuple[AbstractOptimiser, ...]:
        return self.contents.opts

    @property
    def states(self) -> tuple[OptState, ...]:
        return self.contents.states

    @property
    def saved(self) -> tuple[Any, ...]:
        return self.contents.saved

    @property
    def count(self) -> Int[Array, ""]:
        return self.contents.count

    def with_opt_state(self, level: int, opt_state: OptState) -> "TowerState":
        """This state with level `level`'s (1-based) optimiser state replaced by
        `opt_state`, which must have the same structure (e.g. Adam's moments
        started elsewhere). For a tied tower, level 1 is the model's state and
        level 2 the shared set's own."""
        contents = self.contents
        states = list(contents.states)
        old = states[level - 1]
        if jax.tree.structure(old) != jax.tree.structure(opt_state):
            raise ValueError(
                f"with_opt_state: level {level}'s state has structure "
                f"{jax.tree.structure(old)}, got {jax.tree.structure(opt_state)}."
            )
        states[level - 1] = opt_state
        contents = dataclasses.replace(contents, states=tuple(states))
        return dataclasses.replace(self, packed=pack(contents))

    def set_hyperparams(self, level: int, new: dict[str, Any]) -> "TowerState":
        """This state with level `level`'s (1-based; 1 for a tied tower's one set)
        hyperparameters set to the values `new`, `name -> value`, broadcast over
        per-leaf/element hyperparameters and moved into their bounds."""
        contents = self.contents
        opts = list(contents.opts)
        opt, fields = opts[level - 1], hyper_fields(opts[level - 1])
        for name, value in new.items():
            h = fields[name]
            scalar = TRANSFORMS[h.transform].inverse(
                jnp.asarray(value, jnp.result_type(float))
            )
            raw = jax.tree.map(
                lambda r: jnp.broadcast_to(scalar.astype(r.dtype), r.shape), h.raw
            )
            opt = eqx.tree_at(lambda o: getattr(o, name).raw, opt, raw)
        opts[level - 1] = clip(opt)
        contents = dataclasses.replace(contents, opts=tuple(opts))
        return dataclasses.replace(self, packed=pack(contents))


def hyperparams(state: TowerState) -> list[dict[str, PyTree[Array]]]:
    """The constrained hyperparameter values of every level, bottom level first.

    **Arguments:**

    - `state`: a tower's state, from `Stack.init` or `Stack.update`.

    **Returns:** a list with one dict `name -> value` per level (for a tied tower,
    the one shared set repeated at every level). Values are scalars, or pytrees
    shaped like the tuned tree for `per="leaf"`/`"element"`.

    ```python
    ro.hyperparams(state)[0]["lr"]  # the learning rate of the model
    ```
    """
    if not isinstance(state, TowerState):
        raise TypeError(
            f"hyperparams needs a tower state from Stack.init/update, got "
            f"{type(state).__name__}."
        )
    if state.tied:
        levels = [values(state.opts[0]) for _ in range(state.depth)]
    else:
        levels = [values(o) for o in state.opts]

    # Per-leaf and per-element values are lists of the parameters' leaves inside.
    def restructure(x):
        return jax.tree.unflatten(state.param_treedef, x) if isinstance(x, list) else x

    is_list = lambda x: isinstance(x, list)  # noqa: E731
    return [jax.tree.map(restructure, level, is_leaf=is_list) for level in levels]
