"""The opt-in rules that wrap a tower (`HoldCuts`, `DistanceFloor`): what the
runner needs to see through them to the `Stack` and its state."""

import dataclasses
from typing import Any

import equinox as eqx

from ._floor import DistanceFloor, DistanceFloorState
from ._hold import HoldCuts, HoldState
from ._stack import Stack

WRAPPERS = (HoldCuts, DistanceFloor)
WRAPPED_STATES = (HoldState, DistanceFloorState)


def stack_of(tower: Any) -> Any:
    """The `Stack` inside `tower` if it is a wrapper, else `tower`."""
    return tower.tower if isinstance(tower, WRAPPERS) else tower


def stack_state(state: Any) -> Any:
    """The tower's state inside `state` if it is a wrapper's, else `state`."""
    return state.tower if isinstance(state, WRAPPED_STATES) else state


def with_stack(tower: Any, stack: Stack) -> Any:
    """`tower` with its `Stack` replaced by `stack` (`stack` if `tower` is one)."""
    if isinstance(tower, WRAPPERS):
        return eqx.tree_at(lambda w: w.tower, tower, stack)
    return stack


def with_stack_state(state: Any, inner: Any) -> Any:
    """`state` with its tower's state replaced by `inner` (`inner` if `state` is
    a tower's state itself)."""
    if isinstance(state, WRAPPED_STATES):
        return dataclasses.replace(state, tower=inner)
    return inner


def after(tower: Any, state: Any, inner: Any, grads, updates, params, loss) -> Any:
    """A wrapper's new state from its tower's new state `inner` (the step from
    `grads` at `params`, batch loss `loss`, that took `updates`); `inner` itself
    for a plain tower."""
    if isinstance(tower, HoldCuts):
        return tower.after(state, inner, grads, updates, loss)
    if isinstance(tower, DistanceFloor):
        return tower.after(state, inner, grads, params)
    return inner
