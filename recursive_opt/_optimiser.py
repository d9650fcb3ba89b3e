"""The optimiser contract: Equinox modules whose hyperparameters are array leaves."""

import abc
from typing import ClassVar

import equinox as eqx
import optax
from jaxtyping import Array, PyTree

from ._checks import check_params, check_same_structure
from ._custom_types import Grads, OptState, Params, Updates
from ._hyper import broadcast_values, cast_like
from ._optax import as_optax, distinct_buffers


class AbstractOptimiser(eqx.Module):
    """Base class of every optimiser that can be stacked into a tower.

    An optimiser is an `eqx.Module` whose hyperparameters are `Hyper` fields holding
    arrays, so `jax.jit`, `jax.vmap` and `jax.grad` see them; its `__init__` makes
    each with [`recursive_opt.Hyper.declare`][] (the documentation's how-to "An
    optimiser of your own" writes Lion this way). A concrete optimiser
    implements two methods and one attribute:

    - `init_state(params) -> state`, the state for `params` (moments, counters).
    - `rule(grads, state, params, hp) -> (updates, state)`, one step as a pure
        function of the constrained hyperparameter values `hp`, a dict
        `name -> pytree shaped like grads`, already in the gradients' dtypes
        (float32 where those are 16-bit: bfloat16 would round b2 = 0.999 to 1;
        what the rule returns is cast back to the dtypes of `grads` and `state`).
        A tower differentiates through `hp`, so the rule must be differentiable
        in it.
    - `uses_params`: whether `rule` reads `params` (weight decay).

    And one class attribute it may override:

    - `adaptive` (default `True`): whether the step moves each coordinate by
        about its learning rate whatever the gradient's scale (Adam, RMSProp,
        AdaGrad, a sign rule such as Lion), or, `False`, by the learning rate
        times the gradient (`SGD` and its variants). `Stack[d](opt)` chooses its
        default levels by it: over an adaptive rule one lr per layer, bounded
        above by 1, a 100-step geometric warm-up and level 2's gated, clipped
        Adam; over the others one lr per array, a 300-step linear warm-up and
        plain upper levels (`_defaults.py` says why).

    A tower differentiates `rule` in its hyperparameters by reverse mode (it keeps
    the inputs of the last step and re-evaluates it). Rules that are elementwise
    in their hyperparameters can say so, and give their derivatives in closed
    form, by subclassing [`recursive_opt.AbstractElementwiseOptimiser`][].

    Users call `init(params)`, which checks `params` and calls `init_state`, and
    `update(grads, state, params=None)`, which lays the module's own
    hyperparameters over the gradients and calls `rule`. Updates are added to the
    parameters ([`recursive_opt.apply_updates`][]).
    """

    uses_params: eqx.AbstractVar[bool]
    adaptive: ClassVar[bool] = True  # step ~ lr per coordinate; SGD's is lr x grad

    @abc.abstractmethod
    def init_state(self, params: Params) -> OptState:
        """The optimiser state for `params` (called by `init`)."""

    @abc.abstractmethod
    def rule(
        self,
        grads: Grads,
        state: OptState,
        params: Params | None,
        hp: dict[str, PyTree[Array]],
    ) -> tuple[Updates, OptState]:
        """One step at hyperparameter values `hp` (see the class docstring)."""

    # `jax.jit(opt.update)` hashes the bound method, hence the optimiser, whose
    # hyperparameters are arrays; an optimiser never changes, so it is hashed by
    # identity (its hyperparameters become constants of that jitted function).
    def __hash__(self) -> int:
        return id(self)

    def init(self, params: Params) -> OptState:
        """The optimiser state for `params`, a pytree of floating-point arrays."""
        check_params(params, type(self).__name__)
        return distinct_buffers(self.init_state(params))

    def update(
        self, grads: Grads, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]:
        """One step with this module's hyperparameters: `(updates, new_state)`."""
        if self.uses_params and params is None:
            raise ValueError(
                f"{type(self).__name__} with weight decay needs the parameters: call "
                "update(grads, state, params)."
            )
        if params is not None:
            check_same_structure(grads, params, "grads", "params")
        return self.apply_rule(grads, state, params, broadcast_values(self, grads))

    def apply_rule(
        self,
        grads: Grads,
        state: OptState,
        params: Params | None,
        hp: dict[str, PyTree[Array]],
    ) -> tuple[Updates, OptState]:
        """`rule`, with its updates and state cast back to the dtypes of `grads`
        and `state`: the hyperparameters of 16-bit leaves are float32, which
        promotes the rule's arithmetic (no-op for 32- and 64-bit leaves)."""
        updates, new_state = self.rule(grads, state, params, hp)
        return cast_like(updates, grads), cast_like(new_state, state)

    def as_optax(self) -> optax.GradientTransformation:
        """This optimiser as an `optax.GradientTransformation` (plain closures)."""
        return as_optax(self)


class AbstractElementwiseOptimiser(AbstractOptimiser):
    """An optimiser whose rule is elementwise in its hyperparameters, with their
    derivatives in closed form.

    Elementwise: coordinate i of the updates depends on coordinate i of each
    broadcast value only, so d updates / d hp is one array per hyperparameter,
    shaped like the updates (a column). A tower then keeps columns, or the
    step's gradients to recompute them from, instead of re-evaluating the rule.
    Besides `AbstractOptimiser`'s methods a subclass implements `jacobian_after`
    and sets `recompute_jacobian`.
    """

    # True when `jacobian_after` is cheap next to reading stored arrays (products
    # and sums only, as for SGD): a tower keeps each step's gradients and
    # recomputes the columns when the next step needs them; otherwise it keeps
    # the columns, one array per tuned name.
    recompute_jacobian: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def jacobian_after(
        self,
        grads: Grads,
        state: OptState,
        params: Params | None,
        hp: dict[str, PyTree[Array]],
        names: tuple[str, ...],
    ) -> dict[str, PyTree[Array]]:
        """d updates / d hp[name] of the step that took `grads` (and `params`) and
        returned `state` (the *new* state), for each of `names`, elementwise.

        Tests check each closed form against forward-mode autodiff of `rule`.
        """

    def columns_from_state(self, names: tuple[str, ...]) -> bool:
        """Whether the columns of `names` need only the new state and the
        hyperparameters, not the step's gradients or parameters (e.g. the
        learning rate's column of a rule with a momentum buffer is that buffer).
        A tower then keeps nothing of the step, if `recompute_jacobian` is set or
        its scheme prefers it (`OneStep(fused=True)`): `jacobian_after` is called
        with the next gradients in place of the step's, as a template of shapes
        and dtypes. False unless a subclass says otherwise."""
        del names
        return False
