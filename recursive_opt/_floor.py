"""An opt-in floor for long runs: level 1's learning rates kept at least a tenth of
a distance-based estimate of the learning rate (prodigy's), until a loss spike."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from ._custom_types import Grads, Params, Updates
from ._optax import apply_updates, as_optax, tree_dot
from ._stack import Stack, check_wrapped
from ._state import TowerState, at_level, brief, concrete

# Prodigy's defaults (`optax.contrib.prodigy()`; Mishchenko and Defazio, 2023),
# which the estimate follows exactly: the Adam betas its step sizes are
# debiased with, the decay of its sums and its first estimate.
B1, B2, B3, D0 = 0.9, 0.999, 0.999**0.5, 1e-6
# The guard: decay of the gradient norm's running mean, and the first step at
# which its lowest value is taken (a start's transient is not a floor).
DECAY, SETTLE = 0.9, 100


class DistanceFloorState(eqx.Module):
    """`DistanceFloor`'s state: the tower's own, and prodigy's estimate's."""

    tower: TowerState
    start: list[Array]  # the parameters' leaves at `init`
    grad_sum: list[Array]  # prodigy's weighted sum of the gradients, per leaf
    numerator: Float[Array, ""]  # prodigy's weighted sum of g . (start - x)
    estimate: Float[Array, ""]  # prodigy's d: an Adam-scale learning rate
    count: Int[Array, ""]  # steps seen
    mean: Float[Array, ""]  # running mean of the gradient's global norm
    low: Float[Array, ""]  # its lowest value from step SETTLE on (0 before)
    on: Float[Array, ""]  # 1 until a spike removes the floor, then 0

    def __repr__(self) -> str:
        """The tower's summary, the estimate and whether the floor is on (traced
        or abstract states print in full)."""
        if not concrete(self):
            return super().__repr__()
        on = "on" if float(self.on) > 0 else "off"
        extra = (
            f"count={brief(self.count)}, estimate={brief(self.estimate)}, floor={on}"
        )
        return f"DistanceFloorState(tower={self.tower!r}, {extra})"


def _scalar_dtype(leaves: list[Array]):
    """The estimate's precision: the parameters' widest, at least float32."""
    return jnp.result_type(jnp.float32, *(x.dtype for x in leaves))


class DistanceFloor(eqx.Module):
    """A tower whose level-1 learning rates are kept at least `fraction` times a
    distance-based estimate of the learning rate, until the gradient spikes. Opt-in,
    for long runs.

    Over long runs on noisy or recurrent problems the one-step hypergradient
    lowers the default tower's lrs below a tuned constant one (Wu et al.'s
    short-horizon bias; benchmarks/README.md, "A floor from prodigy's distance
    estimate"). This keeps every level-1 lr at least `fraction` x d_t (at most
    1), where d_t is prodigy's estimate (`optax.contrib.prodigy` at its
    defaults, Mishchenko and Defazio 2023): a lower bound on the distance from
    the starting point to a solution, as the Adam-scale learning rate prodigy
    would step with, computed from the tower's own gradients and iterates (the
    tower's step is the one taken; prodigy's is not). It only grows, so a
    tenth of it leaves the tower free within a decade of it and stops a fall
    past that.

    A loss spike says the floor's lr is too high there: once a running mean of the
    gradient's global norm (decay 0.9) exceeds `spike` times its lowest value
    since step 100, the floor is removed for the rest of the run and the tower's
    own cuts take over.

    It costs two parameter-sized arrays of state (the starting point and prodigy's
    gradient sum) and their reads and writes each step. Over 400 steps it rarely
    acts (the lrs stay above it); over long runs it gains on some tasks and
    costs on others (benchmarks/README.md, "`ro.DistanceFloor`: the
    spike-guarded floor, opt-in"), so it is a choice of schedule, not a
    default.

    **Arguments:**

    - `tower`: an untied `ro.Stack` of depth >= 2 whose level 1 is an adaptive
        rule (`ro.Adam`, `ro.RMSProp`, `ro.AdaGrad`: d_t is an lr on their
        scale) tuning its learning rate, one per array, layer or model, e.g.
        `ro.Stack[3](ro.Adam())`.
    - `fraction`: the floor as a fraction of d_t (default 0.1).
    - `spike`: the rise of the gradient norm's running mean over its lowest
        value that removes the floor (default 10; `math.inf`: never).

    ```python
    tower = ro.DistanceFloor(ro.Stack[3](ro.Adam()))
    state = tower.init(params)
    updates, state = tower.update(grads, state, params)
    ```
    """

    tower: Stack
    fraction: float = eqx.field(static=True)
    spike: float = eqx.field(static=True)

    def __init__(self, tower: Stack, fraction: float = 0.1, spike: float = 10.0):
        check_wrapped(tower, "DistanceFloor", "floors")
        bottom = tower.levels[0]
        if not bottom.adaptive:
            raise ValueError(
                "DistanceFloor's estimate is a learning rate on an adaptive rule's "
                f"scale (Adam, RMSProp, AdaGrad); level 1 is {type(bottom).__name__}, "
                "whose steps scale with the gradient."
            )
        for name, v, low in (("fraction", fraction, 0.0), ("spike", spike, 1.0)):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"DistanceFloor({name}=...) needs a number, got {v!r}.")
            if not (v > low and not math.isnan(v)) or (
                name == "fraction" and not math.isfinite(v)
            ):
                raise ValueError(
                    f"DistanceFloor({name}=...) must be "
                    + ("finite and > 0" if name == "fraction" else "> 1")
                    + f", got {v!r}."
                )
        self.tower, self.fraction, self.spike = tower, float(fraction), float(spike)

    def __hash__(self) -> int:  # as Stack's: its arrays cannot be hashed
        return id(self)

    def init(self, params: Params) -> DistanceFloorState:
        """The state for `params`: the tower's, a copy of `params` and zeroed sums."""
        tower = self.tower.init(params)
        leaves = [jnp.asarray(p) for p in jax.tree.leaves(params)]

        dtype = _scalar_dtype(leaves)

        def scalar(v, dtype=dtype):  # separate buffers: it may be donated
            return jnp.full((), v, dtype)

        return DistanceFloorState(
            tower,
            [jnp.array(p, copy=True) for p in leaves],
            [jnp.zeros_like(p) for p in leaves],
            scalar(0.0),
            scalar(D0),
            scalar(0, jnp.int32),
            scalar(0.0),
            scalar(0.0),  # unset until step SETTLE: the state stays finite
            scalar(1.0),
        )

    def update(
        self,
        grads: Grads,
        state: DistanceFloorState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, DistanceFloorState]:
        """The tower's `update`, then level 1's lrs floored as described above.
        Other keyword arguments are ignored, as optax's chains pass them."""
        del extra_args
        if params is None:
            raise ValueError(
                "DistanceFloor's estimate reads the parameters: call "
                "update(grads, state, params)."
            )
        self._check_state(state)
        updates, inner = self.tower.update(grads, state.tower, params)
        return updates, self.after(state, inner, grads, params)

    def step(
        self,
        loss_fn: Callable[..., Array],
        params: Params,
        state: DistanceFloorState,
        *batch,
    ) -> tuple[Params, DistanceFloorState, Array]:
        """One training step, `(new_params, new_state, loss)`, as `Stack.step`."""
        self._check_state(state)

        def grads_and_aux(p):  # the gradients also as aux: the estimate reads them
            loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
            return grads, (loss, grads)

        updates, inner, (loss, grads) = self.tower.step_with(
            grads_and_aux, params, state.tower
        )
        new_state = self.after(state, inner, grads, params)
        return apply_updates(params, updates), new_state, loss

    def after(
        self,
        state: DistanceFloorState,
        inner: TowerState,
        grads: Grads,
        params: Params,
    ) -> DistanceFloorState:
        """The new state, from the tower's new state `inner` (made from `state` by
        the step from `grads` at `params`), with prodigy's estimate updated and
        level 1's lrs floored. A step whose gradients are not finite leaves the
        estimate and the guard as they were."""
        g = jax.tree.leaves(grads)
        x = jax.tree.leaves(params)
        dtype = state.estimate.dtype
        count = state.count
        k = (count + 1).astype(dtype)
        d = state.estimate
        # prodigy's update of its estimate, its learning rate schedule at 1. A
        # step whose gradients are not finite changes nothing; the sums are
        # written with that select in the same pass.
        moved = tree_dot(
            g, [s - xi for s, xi in zip(state.start, x, strict=True)], dtype
        )
        norm = jnp.sqrt(tree_dot(g, g, dtype))
        ok = jnp.isfinite(moved) & jnp.isfinite(norm)
        dlr = d * jnp.sqrt(1 - B2**k) / (1 - B1**k)
        grad_sum = [
            jnp.where(ok, B3 * s + (dlr * d / D0) * gi, s).astype(s.dtype)
            for s, gi in zip(state.grad_sum, g, strict=True)
        ]
        numerator = jnp.where(
            ok, B3 * state.numerator + (d / D0) * dlr * moved, state.numerator
        )
        denominator = sum(
            (jnp.sum(jnp.abs(s.astype(dtype))) for s in grad_sum),
            jnp.zeros((), dtype),
        )
        ratio = numerator / denominator  # not finite while every sum is 0
        estimate = jnp.where(ok & jnp.isfinite(ratio), jnp.maximum(d, ratio), d)
        # the guard: its count is the steps before this one, as prodigy's
        mean = DECAY * state.mean + (1 - DECAY) * norm
        settled = count >= SETTLE  # `low` is unset (0) until then
        low = jnp.where(state.low > 0, jnp.minimum(state.low, mean), mean)
        low = jnp.where(settled, low, state.low)
        on = jnp.where(settled & (mean > self.spike * low), 0.0, state.on)
        mean, low, on = (
            jnp.where(ok, a, b)
            for a, b in ((mean, state.mean), (low, state.low), (on, state.on))
        )
        floor = on * jnp.minimum(self.fraction * estimate, 1.0)
        level1 = at_level(1)
        lrs = optax.tree_utils.tree_get(inner, "lr", filtering=level1)
        lrs = jax.tree.map(lambda lr: jnp.maximum(lr, floor).astype(lr.dtype), lrs)
        inner = optax.tree_utils.tree_set(inner, level1, lr=lrs)
        return DistanceFloorState(
            inner,
            state.start,
            grad_sum,
            numerator,
            estimate,
            optax.safe_increment(count),
            mean,
            low,
            on,
        )

    def _check_state(self, state):
        if not isinstance(state, DistanceFloorState):
            raise ValueError(
                "`state` was not made by DistanceFloor.init; got "
                f"{type(state).__name__}."
            )

    def as_optax(self) -> optax.GradientTransformationExtraArgs:
        """This floor as an optax transformation (it needs `params` in `update`)."""
        return as_optax(self, extra_args=True)
