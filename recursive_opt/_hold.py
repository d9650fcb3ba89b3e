"""An opt-in rule for long runs on noisy minibatches: level 1's learning rates are
not cut while the batch loss is still falling and its changes are mostly noise."""

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

# Decays of the loss's short and long averages and of the noise ratio's two.
SHORT, LONG, NOISE = 0.98, 0.995, 0.99


class HoldState(eqx.Module):
    """`HoldCuts`' state: the tower's own, and the averages of the batch loss."""

    tower: TowerState
    count: Int[Array, ""]  # steps seen
    short: Float[Array, ""]  # averages of the batch loss, decay SHORT and LONG
    long: Float[Array, ""]
    last: Float[Array, ""]  # the previous batch loss
    pred: Float[Array, ""]  # the previous step's predicted change, g . u
    noise: Float[Array, ""]  # average of (dL - pred)^2, decay NOISE
    signal: Float[Array, ""]  # average of pred^2, decay NOISE
    held: Int[Array, ""]  # steps at which a cut was blocked

    def __repr__(self) -> str:
        """The tower's summary, and how often a cut was held (traced or abstract
        states print in full)."""
        if not concrete(self):
            return super().__repr__()
        held = f"count={brief(self.count)}, held={brief(self.held)}"
        return f"HoldState(tower={self.tower!r}, {held})"


class HoldCuts(eqx.Module):
    """A tower whose level-1 learning rates are not cut while the batch loss is still
    falling and noisy. Opt-in, for long runs on small minibatches.

    On minibatches the one-step hypergradient weighs a step's noise, paid at once,
    against its progress, which on a slow transient pays off over many steps, and
    over long runs it lowers the learning rates below a tuned constant one (Wu et
    al.'s short-horizon bias; benchmarks/README.md, "Long runs on noisy tasks").
    `HoldCuts` keeps level 1's lrs from falling (raises still pass) at every step
    from `start` on at which

    - the loss is falling: an average of the batch losses with decay 0.98 is below
      one with decay 0.995 (both debiased as Adam's moments are), and
    - the loss is noisy: R = E[(dL - p)^2] / E[p^2] > `ratio`, where dL is the
      change of the batch loss from one step to the next and p = g . u the change
      the step predicted to first order (averages with decay 0.99). On a
      deterministic problem dL is about p and R is small, so such problems are
      left alone; on minibatches dL is mostly the difference between batches.

    It needs the batch loss each step: `update(grads, state, params, value=loss)`
    (optax's convention for extra arguments), or `step`, or `ro.fit`, which pass it.
    A step whose loss is not finite leaves the averages as they were and holds
    nothing.

    **Arguments:**

    - `tower`: an untied `ro.Stack` of depth >= 2 whose level 1 tunes its
        learning rate (one per array, layer or model: `HoldCuts` reads and sets
        the tower state's view of them), e.g. `ro.Stack[3](ro.Adam())`.
    - `ratio`: the noise ratio R above which cuts are held (default 10).
    - `start`: the first step at which a cut may be held (default 200; the
        averages need that long to mean something).

    ```python
    tower = ro.HoldCuts(ro.Stack[3](ro.Adam()))
    state = tower.init(params)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, state = tower.update(grads, state, params, value=loss)
    ```
    """

    tower: Stack
    ratio: float = eqx.field(static=True)
    start: int = eqx.field(static=True)

    def __init__(self, tower: Stack, ratio: float = 10.0, start: int = 200):
        check_wrapped(tower, "HoldCuts", "holds")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise TypeError(f"HoldCuts(ratio=...) needs a number, got {ratio!r}.")
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"HoldCuts(ratio=...) must be > 0, got {ratio!r}.")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"HoldCuts(start=...) must be an int >= 0, got {start!r}.")
        self.tower, self.ratio, self.start = tower, float(ratio), start

    def __hash__(self) -> int:  # as Stack's: its arrays cannot be hashed
        return id(self)

    def init(self, params: Params) -> HoldState:
        """The state for `params`: the tower's, and zeroed averages."""

        def zero():  # separate buffers, so that the state can be donated
            return jnp.zeros((), jnp.float32)

        count, held = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
        averages = [zero() for _ in range(6)]
        return HoldState(self.tower.init(params), count, *averages, held)

    def update(
        self,
        grads: Grads,
        state: HoldState,
        params: Params | None = None,
        *,
        value: Array | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, HoldState]:
        """The tower's `update`, with level 1's cuts held as described above.
        `value` is the batch loss at `params` (the loss `grads` are the gradient
        of); other keyword arguments are ignored, as optax's chains pass them."""
        del extra_args
        if value is None:
            raise ValueError(
                "HoldCuts needs the batch loss: call update(grads, state, params, "
                "value=loss), or step(loss_fn, params, state, *batch)."
            )
        self._check_state(state)
        updates, inner = self.tower.update(grads, state.tower, params)
        return updates, self.after(state, inner, grads, updates, value)

    def step(
        self, loss_fn: Callable[..., Array], params: Params, state: HoldState, *batch
    ) -> tuple[Params, HoldState, Array]:
        """One training step, `(new_params, new_state, loss)`, as `Stack.step`."""

        self._check_state(state)

        def grads_and_aux(p):  # the gradients also as aux: g . u needs them
            loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
            return grads, (loss, grads)

        updates, inner, (loss, grads) = self.tower.step_with(
            grads_and_aux, params, state.tower
        )
        new_state = self.after(state, inner, grads, updates, loss)
        return apply_updates(params, updates), new_state, loss

    def after(
        self,
        state: HoldState,
        inner: TowerState,
        grads: Grads,
        updates: Updates,
        value: Array,
    ) -> HoldState:
        """The new state, from the tower's new state `inner` (made from `state` by
        the step that took `updates` from `grads` at batch loss `value`), with
        level 1's lrs kept from falling where the rule holds cuts."""
        value = jnp.asarray(value, jnp.float32)
        if value.shape != ():
            raise ValueError(
                f"HoldCuts needs the batch loss as a scalar, got shape {value.shape}."
            )
        count = state.count
        seen = count > 0
        k = (count + 1).astype(jnp.float32)
        short = SHORT * state.short + (1 - SHORT) * value
        long = LONG * state.long + (1 - LONG) * value
        change = value - state.last - state.pred
        noise = jnp.where(seen, NOISE * state.noise + (1 - NOISE) * change**2, 0.0)
        signal = jnp.where(
            seen, NOISE * state.signal + (1 - NOISE) * state.pred**2, 0.0
        )
        pred = tree_dot(grads, updates)
        # A step whose loss or prediction is not finite leaves the averages as
        # they were and holds nothing (`ro.fit`'s guard then skips it).
        ok = jnp.isfinite(value) & jnp.isfinite(pred)
        falling = short / (1 - SHORT**k) < long / (1 - LONG**k)
        hold = ok & falling & (noise > self.ratio * signal) & (count >= self.start)
        level1 = at_level(1)
        old = optax.tree_utils.tree_get(state.tower, "lr", filtering=level1)
        new = optax.tree_utils.tree_get(inner, "lr", filtering=level1)
        kept = jax.tree.map(
            lambda a, b: jnp.where(hold, jnp.maximum(a, b), b).astype(b.dtype), old, new
        )
        inner = optax.tree_utils.tree_set(inner, level1, lr=kept)
        stats = (optax.safe_increment(count), short, long, value, pred, noise, signal)
        before = (count, state.short, state.long, state.last, state.pred)
        before = (*before, state.noise, state.signal)
        stats = [jnp.where(ok, a, b) for a, b in zip(stats, before, strict=True)]
        return HoldState(inner, *stats, state.held + hold.astype(jnp.int32))

    def _check_state(self, state):
        if not isinstance(state, HoldState):
            raise ValueError(
                f"`state` was not made by HoldCuts.init; got {type(state).__name__}."
            )

    def as_optax(self) -> optax.GradientTransformationExtraArgs:
        """This rule as an optax transformation whose `update` takes `value=loss`."""
        return as_optax(self, extra_args=True)
