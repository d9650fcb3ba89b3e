"""Towers of optimisers: `Stack` and its default levels."""

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

from ._checks import check_leaf_shapes, check_params, check_same_structure
from ._custom_types import Grads, Params, Updates
from ._defaults import (
    WARMUP_SHAPE,
    WARMUP_SHAPES,
    default_levels,
    default_warmup,
    default_warmup_shape,
)
from ._flat import flattens, to_flat
from ._hyper import (
    Hyper,
    clip,
    hyper_fields,
    layer_groups,
    resolve,
    tuned_raw,
    value_groups,
)
from ._hypergradients import AbstractHypergradient, OneStep
from ._hypergradients._base import linearize
from ._hypergradients.one_step import (
    Inputs,
    initial_record,
)
from ._levels import check_array_leaves, check_levels
from ._optax import apply_updates, as_optax, distinct_buffers
from ._optimiser import AbstractOptimiser
from ._state import Contents, TowerState
from ._tower_step import fused, previous, update_tied, update_untied


class _Repeat:
    def __init__(self, depth: int):
        self.depth = depth

    def __call__(
        self,
        opt: AbstractOptimiser,
        *more,
        tie: bool = False,
        hypergradient: AbstractHypergradient | None = None,
        warmup: int | None = None,
        warmup_shape: str | None = None,
    ) -> "Stack":
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
            return Stack(
                *([opt] * self.depth),
                tie=True,
                hypergradient=hypergradient,
                warmup=warmup or 0,
                warmup_shape=warmup_shape or WARMUP_SHAPE,
            )
        # One lr per leaf with the default scheme; other schemes carry a tangent
        # (or a window's derivative) per tuned value, so they keep one lr.
        one_step = hypergradient is None or isinstance(hypergradient, OneStep)
        if warmup is None:
            warmup = default_warmup(opt, self.depth, one_step)
        if warmup_shape is None:
            warmup_shape = default_warmup_shape(opt, one_step)
        return Stack(
            *default_levels(opt, self.depth, one_step),
            hypergradient=hypergradient,
            warmup=warmup,
            warmup_shape=warmup_shape,
        )

    def __repr__(self) -> str:
        return f"Stack[{self.depth}]"


class Stack(eqx.Module):
    """A tower of optimisers: each level tunes the hyperparameters of the one below.

    `Stack(opt1, opt2, ...)` lists the levels bottom first: level 1 optimises the
    model, level k+1 the raw (unconstrained) tuned hyperparameters of level k, and
    the top level's hyperparameters are fixed. `Stack[d](opt)` is the tuning-free
    default: `opt` at level 1 with its learning rate tuned (other hyperparameters
    stay fixed unless declared with `ro.hyper`; an `Adam()` given no lr starts
    at 1e-2 with `OneStep`, see `ro.Adam`; with `OneStep` an adaptive rule's
    lr is never raised above 1, or above its start where that is higher,
    `bounds=(None, 1.0)`), `Adam(0.1)` at level 2 and
    `Adam(0.01)` above, each on the log learning rate of the level below (b1 =
    0.9 and b2 = 0.99 fixed; level 2's b1 is 0.5 unless `opt` is an `SGD` (or
    another rule that is not adaptive, `opt.adaptive`) or the scheme not
    `OneStep`, and in that case each upper level raises the log
    lr below by at most twice its own lr a step, `clip=(-2.0, None)`, and cuts
    it freely; after its first 100 steps level 2 raises as fast as its signal
    is sure of it and, after its first 300, cuts once a 100-step mean says cut
    by a standard error, `gate=(0.9, 100, 1.0, 300)`), and
    level 1's step warmed up over 100 steps, geometrically (300 steps, linearly,
    when `opt` is not adaptive, an `SGD`, and the scheme `OneStep`; linearly with other
    schemes; see `_defaults.py` for why). It is tuning-free when `opt`
    has momentum (`Adam`, `SGD(momentum=0.9)`): without it (`SGD()`, `RMSProp`,
    `AdaGrad`, Adam with `b1=0`) the one-step hypergradient keeps lowering the
    learning rate under gradient noise. With
    `tie=True` all levels are `opt` and share one
    hyperparameter pytree, which then optimises itself; its hypergradient is the
    sum over its uses, truncated at depth `d`.

    Level 1's hypergradient comes from `hypergradient`: one-step by default
    ([`recursive_opt.OneStep`][], which needs only the model's gradients, so
    `update` serves), or a longer horizon ([`recursive_opt.RealTime`][],
    [`recursive_opt.Unrolled`][]), some of which need the loss and so `step`.
    Levels above keep the one-step chain.

    **Arguments:**

    - `*levels`: the optimisers, bottom first.
    - `tie`: share one hyperparameter pytree between identical levels.
    - `hypergradient`: the scheme for level 1's hypergradient (default
        `ro.OneStep()`).
    - `warmup`: level 1's step t (from 0) is multiplied by a factor that rises
        from 1/warmup at t = 0 to 1 at t = warmup - 1 and stays 1; 0 (the default
        of `Stack(...)` and of tied towers) switches it off; `Stack[d](opt)` uses
        100 (300 for SGD) unless given `warmup=`. Hypergradients see the step
        actually taken. The levels do not depend on it: over an adaptive rule
        level 2's cut test starts after step 300 whatever the warm-up
        (`benchmarks/README.md`, "A warm-up you give and level 2's cut test",
        measures a start tied to it).
    - `warmup_shape`: how the factor rises: `"geometric"`,
        warmup ** ((t+1)/warmup - 1), by the same ratio each step, or `"linear"`,
        (t+1)/warmup. `Stack[d](opt)` uses geometric unless `opt` is not adaptive
        (an `SGD`) or the scheme is not `OneStep`; `Stack(...)` uses linear.

    ```python
    tower = ro.Stack[3](ro.Adam())  # a start anywhere in 1e-5..1 is corrected
    state = tower.init(params)
    updates, state = tower.update(grads, state, params)
    ro.hyperparams(state)  # [{"lr": ..., "b1": ...}, ...], bottom level first
    ```
    """

    levels: tuple[AbstractOptimiser, ...]
    tie: bool = eqx.field(static=True)
    hypergradient: AbstractHypergradient
    warmup: int = eqx.field(static=True)
    warmup_shape: str = eqx.field(static=True)

    def __class_getitem__(cls, depth: int) -> _Repeat:
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise TypeError(f"Stack[depth] needs an integer depth, got {depth!r}.")
        if depth < 1:
            raise ValueError(f"Stack[depth] needs depth >= 1, got {depth}.")
        return _Repeat(depth)

    def __init__(
        self,
        *levels: AbstractOptimiser,
        tie: bool = False,
        hypergradient: AbstractHypergradient | None = None,
        warmup: int = 0,
        warmup_shape: str = WARMUP_SHAPE,
    ):
        hypergradient = check_levels(levels, tie, hypergradient)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(
                f"Stack(warmup=...) needs an integer >= 0, got {warmup!r}."
            )
        if warmup_shape not in WARMUP_SHAPES:
            raise ValueError(
                f"Stack(warmup_shape=...) must be one of {WARMUP_SHAPES}, got "
                f"{warmup_shape!r}."
            )
        self.warmup = warmup
        self.warmup_shape = warmup_shape
        self.levels = tuple(levels)
        self.tie = bool(tie) and len(levels) > 1
        self.hypergradient = hypergradient

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
        # NumPy leaves become JAX arrays first: float64 ones would otherwise ask
        # for float64 state and, with x64 off, warn at each array's cast.
        params = jax.tree.map(jnp.asarray, params)
        groups = layer_groups(params)  # the layers, which the leaves' list forgets
        params, param_treedef = jax.tree.flatten(params)
        if self.tie:
            opt = clip(resolve(self.levels[0], params, groups))
            targets = (params, tuned_raw(opt))
            opts = (opt,)
            steppers = (opt, opt)
        else:
            opts, targets, target, copies = [], [], params, None
            for k, level in enumerate(self.levels):
                opt = clip(resolve(level, target, groups if k == 0 else None, copies))
                opts.append(opt)
                # Above level 1, one vector per dtype where the level steps
                # the values below it so (`_flat`).
                flat = k > 0 and flattens(opt, target)
                targets.append(to_flat(target, target) if flat else target)
                target, copies = tuned_raw(opt), value_groups(opt)
            opts = steppers = tuple(opts)
        states = tuple(o.init_state(t) for o, t in zip(steppers, targets))
        scheme = self.hypergradient
        if self.tie:
            h = targets[1]
            saved = (
                scheme.init(opt, params, states[0], self.warmup > 0),
                Inputs(
                    jax.tree.map(jnp.zeros_like, h),
                    states[1],
                    h if opt.uses_params else None,
                ),
            )
        else:  # the top level's update is never differentiated
            saved = tuple(
                scheme.init(o, t, s, self.warmup > 0)
                if k == 0
                else initial_record(o, t, s)
                for k, (o, t, s) in enumerate(zip(opts[:-1], targets[:-1], states))
            )
            if fused(self):
                first = previous(saved[0], opts, states, saved)
                saved = (first, *saved[1:])
        check_array_leaves(opts, states)
        contents = Contents(opts, states, saved, jnp.zeros([], jnp.int32))
        param_shapes = tuple(p.shape for p in params)
        return TowerState.from_contents(
            distinct_buffers(contents),
            self.depth,
            self.tie,
            param_shapes,
            param_treedef,
            self._settings(),
        )

    def update(
        self, grads: Grads, state: TowerState, params: Params | None = None
    ) -> tuple[Updates, TowerState]:
        """One step of the whole tower from the model's gradients.

        Returns `(updates, new_state)`; the updates are added to the parameters.
        A scheme that needs the loss (e.g. `RealTime` with curvature) needs `step`.
        """
        self._check_state(state)
        if self.depth > 1 and self.hypergradient.needs_loss:
            raise ValueError(
                f"This tower's hypergradient ({type(self.hypergradient).__name__}) "
                "needs Hessian-vector products of the loss, which gradients alone "
                "do not give: call tower.step(loss_fn, params, state, *batch)."
            )
        return self._update(grads, state, params, None)

    def step(
        self,
        loss_fn: Callable[..., Array],
        params: Params,
        state: TowerState,
        *batch,
        meta_batch: tuple | None = None,
    ) -> tuple[Params, TowerState, Array]:
        """One training step: `(new_params, new_state, loss)`, where `loss` is
        `loss_fn(params, *batch)`, a scalar, at the parameters before the step.

        Works with every hypergradient scheme; those that need curvature take
        their Hessian-vector products of `loss_fn` here. With `meta_batch` (a
        tuple of `loss_fn`'s data arguments, e.g. a held-out batch), level 1's
        hyperparameters follow the loss on it instead of on `batch`: the
        hypergradient's cotangent is `jax.grad(loss_fn)(params, *meta_batch)`.
        """

        def grads_and_loss(p):
            loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
            return grads, loss

        meta = None
        if meta_batch is not None:
            meta = jax.grad(loss_fn)(params, *meta_batch)
        updates, state, loss = self.step_with(grads_and_loss, params, state, meta)
        return apply_updates(params, updates), state, loss

    def step_with(
        self,
        grads_and_aux: Callable,
        params: Params,
        state: TowerState,
        meta_grads: Grads | None = None,
    ) -> tuple[Updates, TowerState, Any]:
        """`step` for a function `params -> (grads, aux)`; returns
        `(updates, new_state, aux)`. For drivers whose loss carries more.
        `meta_grads`, shaped like the gradients, replace them as the cotangent of
        level 1's hypergradient (see `step`'s `meta_batch`)."""
        self._check_state(state)
        if meta_grads is not None:
            check_same_structure(meta_grads, params, "meta_grads", "params")
            meta_grads = jax.tree.leaves(meta_grads)
        directions = None
        if self.depth > 1 and self.hypergradient.needs_loss:
            directions = self.hypergradient.directions(state.saved[0])
        if directions is None:
            grads, aux = grads_and_aux(params)
            return *self._update(grads, state, params, None, meta_grads), aux
        grads, hvps, aux = linearize(grads_and_aux, params, directions)
        return *self._update(grads, state, params, hvps, meta_grads), aux

    def _settings(self) -> tuple:
        """What a state made by this tower fixes besides values: each level's kind
        and options (e.g. Adam's `gate`, `clip`, weight decay or none), its
        hyperparameters' transforms, which are tuned and how they are shared, and
        the scheme. The state holds the levels, and `update` steps those, so a
        state is only stepped by a tower of the same settings; initial values
        (e.g. the learning rate a tower starts at) may differ."""
        levels = self.levels[:1] if self.tie else self.levels
        return (_options(self.hypergradient), *(_level_settings(o) for o in levels))

    def _check_state(self, state):
        if (
            not isinstance(state, TowerState)
            or state.depth != self.depth
            or state.tied != self.tie
        ):
            raise ValueError(
                "`state` was not made by this tower's init (depth "
                f"{self.depth}, tie={self.tie})."
            )
        if state.settings is not None and state.settings != (mine := self._settings()):
            where = next(
                k for k, (a, b) in enumerate(zip(state.settings, mine)) if a != b
            )
            what = "hypergradient scheme" if where == 0 else f"level {where}"
            raise ValueError(
                f"`state` was made by a tower whose {what} differs from this one's ("
                f"{_difference(state.settings[where], mine[where])}). A tower "
                "steps the levels its state holds, so make the state with this "
                "tower's init (hyperparameter values carry over with "
                "`optax.tree_utils.tree_set` or `ro.set_hyperparams`)."
            )

    def _update(self, grads, state, params, hvps, meta=None):
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
        step = update_tied if state.tied else update_untied
        out_def = jax.tree.structure(grads)
        if params is not None:
            params = jax.tree.leaves(params)
        grads = jax.tree.leaves(grads)
        cotangent = grads if meta is None else meta  # of level 1's hypergradient
        updates, opts, states, saved = step(
            self, grads, cotangent, contents, params, hvps
        )
        updates = jax.tree.unflatten(out_def, updates)
        count = optax.safe_increment(contents.count)
        new_state = state.replace_contents(Contents(opts, states, saved, count))
        return updates, new_state

    def as_optax(self) -> optax.GradientTransformation:
        """This tower as an `optax.GradientTransformation` (plain closures)."""
        return as_optax(self)


def _options(module: eqx.Module) -> tuple:
    """A module's kind and its static fields: its options, not its arrays."""
    static = tuple(
        (f.name, getattr(module, f.name))
        for f in dataclasses.fields(module)
        if f.metadata.get("static", False)
    )
    return type(module), static


def _level_settings(opt: AbstractOptimiser) -> tuple:
    """`_options(opt)`, and for each hyperparameter its transform, whether it is
    tuned, how it is shared and the bounds declared with `ro.hyper` (a field
    that is None has none). A default level's bounds follow its start (the
    ceiling), so they are a value and left out."""
    hypers = tuple(
        (name, (h.transform, h.tune, h.per, h.bounds if h.declared else None))
        for name, h in hyper_fields(opt).items()
    )
    return (*_options(opt), hypers)


def _fields(settings: tuple) -> dict[str, str]:
    """`_options` or `_level_settings` as readable `{name: value}`."""
    kind, static, *hypers = settings
    out = {"kind": kind.__name__} | {name: repr(value) for name, value in static}
    for name, (transform, tune, per, bounds) in hypers[0] if hypers else ():
        out[name] = (
            f"{transform} transform, {'tuned' if tune else 'fixed'}, per={per!r}"
            + ("" if bounds is None else f", bounds={bounds!r}")
        )
    return out


def _difference(theirs: tuple, mine: tuple) -> str:
    """The fields in which two settings differ: "name A in the state, B here"."""
    a, b = _fields(theirs), _fields(mine)
    if a["kind"] != b["kind"]:
        return f"{a['kind']} in the state, {b['kind']} here"
    return "; ".join(  # within one kind, a name one side lacks is a None field
        f"{name} {a.get(name, 'None')} in the state, {b.get(name, 'None')} here"
        for name in dict.fromkeys([*a, *b])
        if a.get(name) != b.get(name)
    )


def check_wrapped(tower: Any, who: str, does: str) -> None:
    """That `tower`, wrapped by the rule `who` (which `does` something to level
    1's learning rates), is an untied `Stack` of depth >= 2 whose level 1 tunes
    its lr one per array, layer or model."""
    if not isinstance(tower, Stack):
        raise TypeError(
            f"{who} wraps a tower, ro.Stack[d](opt) with d >= 2, got "
            f"{type(tower).__name__}."
        )
    if tower.depth < 2 or tower.tie:
        raise ValueError(
            f"{who} needs an untied tower of depth >= 2 (level 1's learning "
            f"rates tuned by a level above), got depth {tower.depth}"
            f"{' tied' if tower.tie else ''}."
        )
    bottom = tower.levels[0]
    lr = getattr(bottom, "lr", None)
    if not (isinstance(lr, Hyper) and lr.tune and lr.per != "element"):
        raise ValueError(
            f"{who} {does} level 1's tuned learning rates, one per array, layer "
            f"or the whole model; this tower's level 1 ({type(bottom).__name__}) has "
            + (
                "them per element."
                if isinstance(lr, Hyper) and lr.tune
                else "no tuned `lr`."
            )
        )
