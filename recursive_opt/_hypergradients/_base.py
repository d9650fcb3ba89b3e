"""The contract of a hypergradient scheme: how level 1's hypergradient is obtained."""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, PyTree

from .._custom_types import Grads, HyperParams, OptState, Params, Updates
from .._optimiser import AbstractOptimiser


class AbstractHypergradient(eqx.Module):
    """How a tower obtains the hypergradient of level 1's tuned hyperparameters,
    the one the level above optimises. A module the tower holds, as optimistix's
    solvers hold their adjoint: `ro.Stack(..., hypergradient=ro.RealTime(0.99))`.

    A scheme keeps a record of level 1's steps in the tower's state (its
    structure fixed from `init` on). Levels above level 1 keep the one-step chain
    whatever the scheme. A scheme never loops or prints; the tower calls, at each
    step: `hypergrad`, then (when `upper_steps` allows) the levels above, then
    `step`. Parameters, gradients and tangents are lists of the model's leaves.
    """

    @property
    def needs_loss(self) -> bool:
        """Whether `step` needs Hessian-vector products of the loss, so that the
        tower must be driven by `tower.step(loss_fn, ...)` rather than `update`."""
        return False

    def check(self, opt: AbstractOptimiser) -> None:
        """Raise a `ValueError` if this scheme cannot serve level 1 `opt`."""
        del opt

    @abc.abstractmethod
    def init(
        self, opt: AbstractOptimiser, params: Params, state: OptState, scaled: bool
    ) -> Any:
        """The record before any step, for level 1 `opt` with its initial `state`;
        `scaled`: whether `step` will be given a `scale`."""

    @abc.abstractmethod
    def hypergrad(
        self, opt: AbstractOptimiser, state: OptState, record: Any, grads: Grads
    ) -> HyperParams:
        """The hypergradient of `opt`'s raw tuned hyperparameters, shaped like them,
        from the model's gradients `grads` at the current parameters."""

    def upper_steps(self, record: Any) -> Bool[Array, ""] | None:
        """Whether the levels above step now; `None` means at every step."""
        del record
        return None

    def directions(self, record: Any) -> dict[str, PyTree[Array]] | None:
        """The tangents of the parameters whose Hessian-vector products `step`
        needs, one per tuned name (only when `needs_loss`)."""
        del record
        return None

    @abc.abstractmethod
    def step(
        self,
        opt: AbstractOptimiser,
        grads: Grads,
        state: OptState,
        params: Params | None,
        record: Any,
        hvps: dict[str, PyTree[Array]] | None,
        scale: Array | None,
        cotangent: Grads | None,
    ) -> tuple[Updates, OptState, Any]:
        """Level 1's step with `opt` (its hyperparameters already updated), and the
        new record. `hvps` are the Hessian-vector products of `directions`;
        `scale` (a scalar, or None for 1) multiplies the step (a warm-up), and the
        hypergradients it gives must account for it. `cotangent` is what
        `hypergrad` was given this step (the gradients, or held-out ones)."""


def linearize(
    grads_and_aux: Callable, params: PyTree[Array], directions: dict[str, list]
) -> tuple[PyTree[Array], dict[str, list[Array]], Any]:
    """`(grads, hvps, aux)`: the gradients from `grads_and_aux(params) ->
    (grads, aux)`, and their derivative along each direction (lists of the
    parameters' leaves), i.e. Hessian-vector products, one per name."""
    treedef = jax.tree.structure(params)
    names = tuple(directions)
    tangents = jax.tree.map(lambda *zs: jnp.stack(zs), *[directions[n] for n in names])
    grads, linear, aux = jax.linearize(grads_and_aux, params, has_aux=True)
    stacked = jax.vmap(linear)(jax.tree.unflatten(treedef, tangents))
    hvps = {
        n: jax.tree.leaves(jax.tree.map(lambda h: h[i], stacked))
        for i, n in enumerate(names)
    }
    return grads, hvps, aux
