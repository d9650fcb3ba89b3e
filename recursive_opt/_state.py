"""The state of a tower: its levels' optimisers, states and records, packed."""

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, PyTree

from ._custom_types import OptState
from ._hyper import TRANSFORMS, clip, hyper_fields, map_scalars, values
from ._optax import distinct_buffers
from ._optimiser import AbstractOptimiser
from ._pack import Packed, pack, unpack


class Contents(eqx.Module):
    opts: tuple[AbstractOptimiser, ...]
    states: tuple[OptState, ...]
    saved: tuple[Any, ...]  # each level's record for its hypergradient
    count: Int[Array, ""]


def _view(opts) -> tuple[dict[str, PyTree[Array]], ...]:
    # Scalars and per-leaf values only: a per-element hyperparameter's values
    # would be another parameter-sized array in the state, written every step.
    return tuple(
        {n: h.value for n, h in hyper_fields(o).items() if h.per != "element"}
        for o in opts
    )


def _same(new: Array, current: Array) -> Array:
    # A value computed from the raw one by the same transform, possibly in another
    # compiled program: equal up to a few ulps. A change that small is no change.
    tol = 4 * jnp.finfo(current.dtype).eps
    return (new == current) | (jnp.abs(new - current) <= tol * jnp.abs(current))


def _apply_view(opts, view):
    """`opts` with every hyperparameter whose value in `view` differs from its raw
    one's set from the view (then moved into its bounds); the others keep their raw
    values bit for bit."""
    new_opts = []
    for opt, level in zip(opts, view, strict=True):
        fields = hyper_fields(opt)
        names = list(level)
        raws = []
        for name in names:
            h, v = fields[name], level[name]
            t = TRANSFORMS[h.transform]

            def one(r, v, t=t):
                v = jnp.broadcast_to(jnp.asarray(v, r.dtype), r.shape)
                return jnp.where(_same(v, t.forward(r)), r, t.inverse(v))

            if jax.tree.structure(v) == jax.tree.structure(h.raw):
                raws.append(map_scalars(one, h.raw, v))
            elif jax.tree.structure(v).num_leaves == 1:  # one value for every leaf
                (v,) = jax.tree.leaves(v)
                raws.append(map_scalars(lambda r, v=v, one=one: one(r, v), h.raw))
            else:
                raise ValueError(
                    f"The tower state's hyperparameter {name!r} was set to a tree "
                    f"of structure {jax.tree.structure(v)}; it needs one value or "
                    f"a tree of structure {jax.tree.structure(h.raw)}."
                )
        opt = eqx.tree_at(lambda o: [getattr(o, n).raw for n in names], opt, raws)
        new_opts.append(clip(opt))
    return tuple(new_opts)


def _read_in_one_pass(contents: Contents, packed: Packed) -> Contents:
    """`contents`, every array that was packed into a flat vector (the view's
    values applied) computed together: packed again as `packed` is, the flat
    vectors behind an optimisation barrier, and unpacked. Everything small the
    step reads is then read in one fused pass before anything else: on an
    accelerator neither a kernel per value reads them, nor copies keep the
    donated packed vectors alive until later reads (the step writes the new
    ones into their buffers). The values are the same, bit for bit."""
    again = pack(contents, like=packed)
    flats = tuple(jax.lax.optimization_barrier(list(again.flats)))
    return unpack(dataclasses.replace(again, flats=flats))


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
    `_pack.py`). `settings` records the settings of the tower that made it (each
    level's kind and options, transforms, `per=`, declared bounds, the scheme;
    no values): a tower's `update` steps the levels the state holds, so it
    refuses a state whose settings are not its own.

    `hyperparams` holds every level's hyperparameter *values* (one dict per level,
    bottom first; one dict for a tied tower; per-element hyperparameters are left
    out, as they would double their memory: read them with `ro.hyperparams` and set
    them with `set_hyperparams`), in the form optax's tree utilities read and
    write: `optax.tree_utils.tree_get_all_with_path(state, "lr")` finds
    each level's learning rate, and `tree_set` changes it for the next update
    (the raw value is recomputed from a changed value; unchanged ones keep theirs
    bit for bit). `tree_set` checks nothing: a value outside its transform's range
    (an lr <= 0 in log space, a beta outside (0, 1) in logit space) gives a NaN
    raw value and non-finite updates. `set_hyperparams` checks concrete values.
    """

    packed: Packed
    hyperparams: tuple[dict[str, PyTree[Array]], ...]
    depth: int = eqx.field(static=True)
    tied: bool = eqx.field(static=True)
    # Shapes of the parameters' leaves. Their treedef is only for display: Flax NNX
    # initialises with `Param`-wrapped arrays and updates with plain ones.
    param_shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    param_treedef: Any = eqx.field(static=True)
    # The settings of the tower that made it (`Stack._settings`): its levels'
    # kinds and options live in the state, so `update` checks they are its own.
    settings: Any = eqx.field(static=True, default=None)

    @classmethod
    def from_contents(
        cls, contents: Contents, depth, tied, param_shapes, param_treedef, settings
    ) -> "TowerState":
        return cls(
            pack(contents),
            distinct_buffers(_view(contents.opts)),
            depth,
            tied,
            param_shapes,
            param_treedef,
            settings,
        )

    def replace_contents(self, contents: Contents) -> "TowerState":
        return dataclasses.replace(
            self,
            packed=pack(contents, like=self.packed),
            hyperparams=_view(contents.opts),
        )

    # `states`, `saved` and `count` need no hyperparameters: read without the view.
    @property
    def contents(self) -> Contents:
        contents = unpack(self.packed)
        opts = _apply_view(contents.opts, self.hyperparams)
        contents = dataclasses.replace(contents, opts=opts)
        return _read_in_one_pass(contents, self.packed)

    @property
    def opts(self) -> tuple[AbstractOptimiser, ...]:
        return self.contents.opts

    @property
    def states(self) -> tuple[OptState, ...]:
        return unpack(self.packed).states

    @property
    def saved(self) -> tuple[Any, ...]:
        return unpack(self.packed).saved

    @property
    def count(self) -> Int[Array, ""]:
        return unpack(self.packed).count

    def __repr__(self) -> str:
        """A summary: the step count and every level's hyperparameter values (the
        packed arrays and their layout are internal); abstract or traced states
        print in full."""
        if not concrete(self):
            return super().__repr__()

        def values(tree):
            if isinstance(tree, dict):
                inner = ", ".join(f"{k!r}: {values(v)}" for k, v in tree.items())
                return "{" + inner + "}"
            if isinstance(tree, (list, tuple)):
                return "[" + ", ".join(values(v) for v in tree) + "]"
            if isinstance(tree, jax.Array):
                return brief(tree)
            found = jax.tree_util.tree_leaves_with_path(tree)  # a module's arrays
            inner = ", ".join(
                f"{jax.tree_util.keystr(p)}: {brief(v)}" for p, v in found
            )
            return "{" + inner + "}"

        levels = hyperparams(self)[: 1 if self.tied else None]
        return (
            f"TowerState(depth={self.depth}, tied={self.tied}, "
            f"count={brief(self.count)}, hyperparams={values(levels)})"
        )

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
        return self.replace_contents(contents)

    def set_hyperparams(self, level: int, new: dict[str, Any]) -> "TowerState":
        """This state with level `level`'s (1-based; 1 for a tied tower's one set)
        hyperparameters set to the values `new`, `name -> value`, broadcast over
        per-leaf/element hyperparameters and moved into their bounds."""
        contents = self.contents
        opts = list(contents.opts)
        opt, fields = opts[level - 1], hyper_fields(opts[level - 1])
        for name, value in new.items():
            if name not in fields:
                raise ValueError(
                    f"set_hyperparams: level {level} ({type(opt).__name__}) has no "
                    f"hyperparameter {name!r}; it has {sorted(fields)}."
                )
            h = fields[name]
            t = TRANSFORMS[h.transform]
            if not isinstance(value, jax.core.Tracer):
                arr = np.asarray(value, np.float64)
                if not (np.isfinite(arr).all() and t.valid(arr).all()):
                    raise ValueError(
                        f"set_hyperparams: level {level}'s {name!r} must be "
                        f"{t.valid_range} under its {h.transform!r} transform, got "
                        f"{value!r}."
                    )
            scalar = t.inverse(jnp.asarray(value, jnp.result_type(float)))
            raw = jax.tree.map(
                lambda r: jnp.broadcast_to(scalar.astype(r.dtype), r.shape), h.raw
            )
            opt = eqx.tree_at(lambda o: getattr(o, name).raw, opt, raw)
        opts[level - 1] = clip(opt)
        contents = dataclasses.replace(contents, opts=tuple(opts))
        return self.replace_contents(contents)


def concrete(tree: PyTree) -> bool:
    """Whether every leaf of `tree` is an array with values (not traced, not
    abstract), so that a summary can print them."""
    return all(
        isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
        for x in jax.tree.leaves(tree)
    )


def brief(x: Any) -> str:
    """An array in one short line: 1-D ones elided past 8 entries at 4 digits,
    larger ones by their shape and range."""
    x = np.asarray(x)
    if x.ndim > 1:  # per-element values, or a population of them
        return f"array{list(x.shape)} in [{x.min():.4g}, {x.max():.4g}]"
    return np.array2string(
        x,
        max_line_width=10**9,
        threshold=8,
        separator=", ",
        formatter={"float_kind": lambda v: f"{v:.4g}"},
    )


def hyperparams(state: TowerState) -> list[dict[str, PyTree[Array]]]:
    """The constrained hyperparameter values of every level, bottom level first.

    **Arguments:**

    - `state`: a tower's state, from `Stack.init` or `Stack.update`, or an optax
        state that holds one (`optax.chain(..., tower.as_optax())`'s), or the
        `opt_state` of a Flax `nnx.Optimizer` built on a tower.

    **Returns:** a list with one dict `name -> value` per level (for a tied tower,
    the one shared set repeated at every level). Values are scalars, or pytrees
    shaped like the tuned tree for `per="layer"`/`"leaf"`/`"element"`.

    ```python
    ro.hyperparams(state)[0]["lr"]  # the model's learning rate(s): one per layer
                                    # for `Stack[d](opt)`, shaped like the params
    ```
    """
    state = _plain_arrays(_tower_state(state))
    if state.tied:
        levels = [values(state.opts[0]) for _ in range(state.depth)]
    else:
        levels = [values(o) for o in state.opts]

    # Per-leaf and per-element values are lists of the parameters' leaves inside.
    def restructure(x):
        return jax.tree.unflatten(state.param_treedef, x) if isinstance(x, list) else x

    is_list = lambda x: isinstance(x, list)  # noqa: E731
    return [jax.tree.map(restructure, level, is_leaf=is_list) for level in levels]


def _tower_state(state: Any) -> "TowerState":
    """`state` if it is a tower's state, else the one tower state inside it."""
    if isinstance(state, TowerState):
        return state
    is_tower = lambda x: isinstance(x, TowerState)  # noqa: E731
    found = [x for x in jax.tree.leaves(state, is_leaf=is_tower) if is_tower(x)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(
            f"hyperparams was given a state that holds {len(found)} towers' "
            "states; pass the one you mean (e.g. `state[i]` of an optax.chain)."
        )
    raise TypeError(
        "hyperparams needs a tower state from Stack.init/update (or an optax "
        f"state that holds one), got {type(state).__name__}."
    )


def _plain_arrays(state: "TowerState") -> "TowerState":
    """`state` with Flax NNX variables (an `nnx.Optimizer` wraps every array of
    its optax state in one) replaced by their arrays."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        return state
    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    return jax.tree.map(lambda x: x[...] if is_var(x) else x, state, is_leaf=is_var)


def at_level(level: int) -> Callable[[tuple, Any], bool]:
    """A `filtering=` for optax's tree utilities that selects one level of a tower.

    **Arguments:**

    - `level`: the level, 1-based (1 tunes the model). A tied tower has one set of
        hyperparameters, at level 1.

    **Returns:** a function `(path, value) -> bool` that is true for the
    hyperparameters of that level, in a tower state alone or inside an
    `optax.chain`.

    ```python
    lr = optax.tree_utils.tree_get(state, "lr", filtering=ro.at_level(1))
    state = optax.tree_utils.tree_set(state, ro.at_level(1), lr=jnp.float32(0.01))
    ```
    """
    if not isinstance(level, int) or isinstance(level, bool) or level < 1:
        raise ValueError(f"at_level needs a level >= 1, got {level!r}.")
    attr = jax.tree_util.GetAttrKey("hyperparams")
    index = jax.tree_util.SequenceKey(level - 1)

    def filtering(path, value) -> bool:
        return any(
            a == attr and b == index for a, b in zip(path[:-1], path[1:], strict=False)
        )

    return filtering
