"""Towers of optimisers: `Stack` and its default levels."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._chain import (
    Inputs,
    initial_record,
    step_inputs,
    step_record,
    zero_unless,
)
from ._custom_types import Grads, Params, Updates
from ._defaults import default_levels
from ._hyper import (
    Bounds,
    clip,
    hyper_fields,
    resolve,
    tuned_raw,
    with_bounds,
    with_raw,
)
from ._optax import (
    apply_updates,
    as_optax,
    check_leaf_shapes,
    check_params,
    check_same_structure,
    distinct_buffers,
)
from ._optimiser import AbstractOptimiser
from ._pack import pack
from ._state import Contents, TowerState


class _Repeat:
    def __init__(self, depth: int):
        self.depth = depth

    def __call__(self, opt: AbstractOptimiser, *more, tie: bool = False) -> "Stack":
        if more:
            raise TypeError(
                f"Stack[{self.depth}](opt) takes one optimiser, level 1, and puts the "
                "library's default levels above it; to choose every level, list "
                "them: ro.Stack(level1, level2, ...)."
            )
        if not isinstance(opt, AbstractOptimiser):
            raise TypeError(
                f"Stack[{self.depth}](opt) needs a recursive_opt optimiser (e.g. "
                f"ro.SGD, ro.Adam), got {type(opt).__name__}."
            )
        if tie:  # one shared pytree: every level is `opt`
            return Stack(*([opt] * self.depth), tie=True)
        return Stack(*default_levels(opt, self.depth))

    def __repr__(self) -> str:
        return f"Stack[{self.depth}]"


class Stack(eqx.Module):
    """A tower of optimisers: each level tunes the hyperparameters of the one below.

    `Stack(opt1, opt2, ...)` lists the levels bottom first: level 1 optimises the
    model, level k+1 the raw (unconstrained) tuned hyperparameters of level k, and
    the top level's hyperparameters are fixed. `Stack[d](opt)` is the tuning-free
    default: `opt` at level 1 with its learning rate tuned (other hyperparameters
    stay fixed unless declared with `ro.hyper`), `Adam(0.1)` at level 2 and
    `Adam(0.01)` above, each on the log learning rate of the level below (see
    `_defaults.py` for why). With `tie=True` all levels are `opt` and share one
    hyperparameter pytree, which then optimises itself; its hypergradient is the
    sum over its uses, truncated at depth `d`. Hypergradients are one-step (see
    the design notes): `update` needs only the model's gradients.

    **Arguments:**

    - `*levels`: the optimisers, bottom first.
    - `tie`: share one hyperparameter pytree between identical levels.

    ```python
    tower = ro.Stack[3](ro.Adam())  # a start anywhere in 1e-5..1 is corrected
    state = tower.init(params)
    updates, state = tower.update(grads, state, params)
    ro.hyperparams(state)  # [{"lr": ..., "b1": ...}, ...], bottom level first
    ```
    """

    levels: tuple[AbstractOptimiser, ...]
    tie: bool = eqx.field(static=True)

    def __class_getitem__(cls, depth: int) -> _Repeat:
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise TypeError(f"Stack[depth] needs an integer depth, got {depth!r}.")
        if depth < 1:
            raise ValueError(f"Stack[depth] needs depth >= 1, got {depth}.")
        return _Repeat(depth)

    def __init__(self, *levels: AbstractOptimiser, tie: bool = False):
        if not levels:
            raise ValueError("Stack needs at least one optimiser level (depth >= 1).")
        for k, opt in enumerate(levels):
            if not isinstance(opt, AbstractOptimiser):
                raise TypeError(
                    f"Stack level {k + 1} must be a recursive_opt optimiser (e.g. "
                    f"ro.SGD, ro.Adam), got {type(opt).__name__}."
                )
        for k, opt in enumerate(levels[:-1]):
            if not tuned_raw(opt):
                raise ValueError(
                    f"Stack level {k + 2} has nothing to tune: level {k + 1} "
                    f"({type(opt).__name__}) has no tuned hyperparameters. Declare "
                    "some with ro.hyper(value, tune=True), or remove the level above."
                )
        if tie and len(levels) > 1:
            first = levels[0]
            for k, opt in enumerate(levels[1:], start=2):
                if not _identical(first, opt):
                    raise ValueError(
                        "Stack(tie=True) needs identical levels, because all levels "
                        f"share one hyperparameter pytree; level {k} "
                        f"({type(opt).__name__}) differs from level 1 "
                        f"({type(first).__name__}). Use tie=False for different levels."
                    )
            _check_tied_pers(first)
        self.levels = tuple(levels)
        self.tie = bool(tie) and len(levels) > 1

    @property
    def depth(self) -> int:
        return len(self.levels)

    # `jax.jit(tower.update)` hashes the bound method, hence the tower, whose
    # arrays (the levels' initial hyperparameters) cannot be hashed; `update` reads
    # the current ones from the state, so the tower is hashed by identity.
    def __hash__(self) -> int:
        return id(self)

    def init(self, params: Params) -> TowerState:
        """The tower's state for `params`, a pytree of floating-point arrays."""
        check_params(params, "Stack")
        params, param_treedef = jax.tree.flatten(params)
        if self.tie:
            opt = clip(resolve(self.levels[0], params))
            targets = (params, tuned_raw(opt))
            opts = (opt,)
            steppers = (opt, opt)
        else:
            opts, targets, target = [], [], params
            for level in self.levels:
                opt = clip(resolve(level, target))
                opts.append(opt)
                targets.append(target)
                target = tuned_raw(opt)
            opts = steppers = tuple(opts)
        states = tuple(o.init_state(t) for o, t in zip(steppers, targets))
        if self.tie:
            h = targets[1]
            saved = (
                initial_record(opt, params),
                Inputs(
                    jax.tree.map(jnp.zeros_like, h),
                    states[1],
                    h if opt.uses_params else None,
                ),
            )
        else:  # the top level's update is never differentiated
            saved = tuple(initial_record(o, t) for o, t in zip(opts[:-1], targets[:-1]))
        contents = Contents(opts, states, saved, jnp.zeros([], jnp.int32))
        param_shapes = tuple(p.shape for p in params)
        return TowerState(
            pack(distinct_buffers(contents)),
            self.depth,
            self.tie,
            param_shapes,
            param_treedef,
        )

    def update(
        self, grads: Grads, state: TowerState, params: Params | None = None
    ) -> tuple[Updates, TowerState]:
        """One step of the whole tower from the model's gradients.

        Returns `(updates, new_state)`; the updates are added to the parameters.
        """
        if (
            not isinstance(state, TowerState)
            or state.depth != self.depth
            or state.tied != self.tie
        ):
            raise ValueError(
                "`state` was not made by this tower's init (depth "
                f"{self.depth}, tie={self.tie})."
            )
        if params is not None:
            check_same_structure(grads, params, "grads", "params")
        check_leaf_shapes(grads, state.param_shapes, state.param_treedef)
        contents = state.contents
        bottom = contents.opts[0]
        if bottom.uses_params and params is None:
            raise ValueError(
                f"The tower's level 1 ({type(bottom).__name__}) reads the parameters "
                "(weight decay): call update(grads, state, params)."
            )
        step = self._update_tied if state.tied else self._update_untied
        out_def = jax.tree.structure(grads)
        if params is not None:
            params = jax.tree.leaves(params)
        updates, opts, states, saved = step(jax.tree.leaves(grads), contents, params)
        updates = jax.tree.unflatten(out_def, updates)
        count = optax.safe_increment(contents.count)
        new_state = dataclasses.replace(
            state, packed=pack(Contents(opts, states, saved, count))
        )
        return updates, new_state

    def _update_untied(self, grads, state, params):
        d = self.depth
        has_prev = state.count > 0
        # Hypergradients of every level, from the previous step's updates.
        G = [grads]
        for k in range(d - 1):
            G.append(state.saved[k].hypergrad(state.opts[k], state.states[k], G[k]))
        G[1:] = [zero_unless(has_prev, g) for g in G[1:]]
        # Top down: each level's hyperparameters change before the level below
        # uses them.
        opts, states, saved = list(state.opts), list(state.states), list(state.saved)
        for k in reversed(range(d)):
            target = params if k == 0 else tuned_raw(opts[k - 1])
            if k < d - 1:
                updates, states[k], saved[k] = step_record(
                    opts[k], G[k], states[k], target
                )
            else:
                updates, states[k] = opts[k].update(G[k], states[k], target)
            if k > 0:  # bounds hold before the level below steps
                new = with_raw(opts[k - 1], apply_updates(target, updates))
                opts[k - 1] = clip(new)
        return updates, tuple(opts), tuple(states), tuple(saved)

    def _update_tied(self, grads, state, params):
        (opt,) = state.opts
        saved_model, saved_self = state.saved
        # G2 from the model step, G3.. from the self-update; summed over uses.
        G = saved_model.hypergrad(opt, state.states[0], grads)
        total = G
        for _ in range(self.depth - 2):
            G = saved_self.hypergrad(opt, state.states[1], G)
            total = jax.tree.map(jnp.add, total, G)
        total = zero_unless(state.count > 0, total)
        h = tuned_raw(opt)
        h_updates, self_state, saved_self = step_inputs(opt, total, state.states[1], h)
        opt = clip(with_raw(opt, apply_updates(h, h_updates)))
        updates, model_state, saved_model = step_record(
            opt, grads, state.states[0], params
        )
        return updates, (opt,), (model_state, self_state), (saved_model, saved_self)

    def as_optax(self) -> optax.GradientTransformation:
        """This tower as an `optax.GradientTransformation` (plain closures)."""
        return as_optax(self)


def bound(tower: Stack, bounds: list[dict[str, Bounds]]) -> Stack:
    """`tower` with level k's named hyperparameters bounded by `bounds[k]` (one
    entry for a tied tower's one set)."""
    if tower.tie:
        return Stack(*[with_bounds(o, bounds[0]) for o in tower.levels], tie=True)
    return Stack(*[with_bounds(o, b) for o, b in zip(tower.levels, bounds)])


def _check_tied_pers(opt: AbstractOptimiser) -> None:
    # A tied set updates itself: a per-leaf or per-element value (one per leaf of
    # the model) applies to each tuned hyperparameter's own per-leaf values, which
    # a per-tree tuned hyperparameter (one scalar) does not have.
    fields = hyper_fields(opt)
    per_leaf = sorted(n for n, h in fields.items() if h.per != "tree")
    per_tree = sorted(n for n, h in fields.items() if h.per == "tree" and h.tune)
    if per_leaf and per_tree:
        raise ValueError(
            "Stack(tie=True): the tied hyperparameters update themselves, so a "
            f"per-leaf or per-element hyperparameter ({', '.join(per_leaf)}) needs "
            f"every tuned one to be per-leaf or per-element too; "
            f"{', '.join(per_tree)} {'is' if len(per_tree) == 1 else 'are'} "
            "per='tree'. Declare them with the same `per`, or use tie=False."
        )


def _identical(a: AbstractOptimiser, b: AbstractOptimiser) -> bool:
    if a is b:
        return True
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    try:
        return bool(eqx.tree_equal(a, b))
    except jax.errors.ConcretizationTypeError:
        return False
