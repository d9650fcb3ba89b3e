"""The one-step hypergradient chain: what a level keeps of its last update, and
the hypergradient of its hyperparameters that it gives the level above."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, PyTree

from ._custom_types import HyperParams, OptState, Updates
from ._hyper import broadcast, broadcast_values, tuned_raw, with_raw
from ._optimiser import AbstractOptimiser


class Jacobian(eqx.Module):
    """The diagonal Jacobian of a level's last update w.r.t. its hyperparameters.

    Rules are elementwise in their hyperparameters (coordinate i of the update
    depends on coordinate i of each broadcast value), so d update / d hp is one
    array per tuned hyperparameter, shaped like the updates. It is computed in
    forward mode inside the update itself, so the next step's hypergradient is one
    multiply-and-reduce rather than a re-evaluation of the rule and its VJP.
    Valid when the update was made at the hyperparameters' *current* values: every
    untied level, and a tied tower's model step.
    """

    # Shaped like the updates, with a leading axis over the tuned names: one array
    # per leaf keeps the state's leaf count (and jit's dispatch cost) down.
    jac: PyTree[Array]
    names: tuple[str, ...] = eqx.field(static=True)

    def hypergrad(self, opt: AbstractOptimiser, cotangent: PyTree) -> HyperParams:
        def spread(raw):  # raw values -> their values laid over the leaves
            o = with_raw(opt, raw)
            return {n: broadcast(getattr(o, n).value, cotangent) for n in self.names}

        spread_values, vjp = jax.vjp(spread, tuned_raw(opt))

        def leaf_cotangents(jac, cot, *values):
            # d update / d value_i of this leaf, contracted with the cotangent: a
            # matrix-vector product for the scalar values (one pass over `jac`),
            # an elementwise product for the per-element ones.
            if any(jnp.ndim(v) == 0 for v in values):
                dots = jac.reshape(len(values), -1) @ cot.reshape(-1)
            return tuple(
                dots[i] if jnp.ndim(v) == 0 else jac[i] * cot
                for i, v in enumerate(values)
            )

        values = [spread_values[n] for n in self.names]
        per_leaf = jax.tree.map(leaf_cotangents, self.jac, cotangent, *values)
        is_tuple = lambda x: isinstance(x, tuple)  # noqa: E731
        cot_values = {
            n: jax.tree.map(lambda t: t[i], per_leaf, is_leaf=is_tuple)
            for i, n in enumerate(self.names)
        }
        return vjp(cot_values)[0]


class Inputs(eqx.Module):
    """The inputs of a level's last update, held constant by the chain.

    For a tied tower's self-update, which was made at the hyperparameters' values
    *before* that update; the chain re-evaluates it at the current values.
    """

    grads: PyTree[Array]
    state: OptState
    params: PyTree[Array] | None  # kept only for rules that read their parameters

    def hypergrad(self, opt: AbstractOptimiser, cotangent: PyTree) -> HyperParams:
        def update_at(raw):
            return with_raw(opt, raw).update(self.grads, self.state, self.params)[0]

        _, vjp = jax.vjp(update_at, tuned_raw(opt))
        cotangent = jax.tree.map(lambda c, g: c.astype(g.dtype), cotangent, self.grads)
        return vjp(cotangent)[0]


def step_jacobian(opt, grads, state, params) -> tuple[Updates, OptState, Jacobian]:
    """One update of `opt`, and its diagonal Jacobian w.r.t. each tuned value."""
    names = tuple(tuned_raw(opt))
    hp = broadcast_values(opt, grads)
    updates, new_state, columns = opt.rule_jacobian(grads, state, params, hp, names)
    return (
        updates,
        new_state,
        Jacobian(_stack_names([columns[n] for n in names]), names),
    )


def step_inputs(opt, grads, state, params) -> tuple[Updates, OptState, Inputs]:
    updates, new_state = opt.update(grads, state, params)
    return updates, new_state, Inputs(grads, state, params if opt.uses_params else None)


def _stack_names(columns: list[PyTree[Array]]) -> PyTree[Array]:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *columns)


def no_jacobian(opt, target) -> Jacobian:
    """The Jacobian record before any step: zeros, so the first hypergradient is 0."""
    names = tuple(tuned_raw(opt))
    zeros = jax.tree.map(jnp.zeros_like, target)
    return Jacobian(_stack_names([zeros] * len(names)), names)


def zero_unless(flag: Bool[Array, ""], tree: PyTree[Array]) -> PyTree[Array]:
    # A select, not a product: a non-finite value where `flag` is false is dropped.
    return jax.tree.map(lambda x: jnp.where(flag, x, jnp.zeros_like(x)), tree)
