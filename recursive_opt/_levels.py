"""The checks on a tower's levels, tying and scheme, made when it is built."""

import dataclasses

import equinox as eqx
import jax

from ._hyper import hyper_fields, tuned_raw
from ._hypergradients import AbstractHypergradient, OneStep
from ._optimiser import AbstractOptimiser


def check_levels(
    levels: tuple, tie: bool, hypergradient: AbstractHypergradient | None
) -> AbstractHypergradient:
    """Raise on levels a tower cannot stack; returns the scheme (default OneStep)."""
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
    if hypergradient is None:
        hypergradient = OneStep()
    if not isinstance(hypergradient, AbstractHypergradient):
        raise TypeError(
            "Stack(hypergradient=...) needs a scheme such as ro.OneStep(), "
            f"ro.RealTime(decay) or ro.Unrolled(k), got "
            f"{type(hypergradient).__name__}."
        )
    if len(levels) > 1:
        hypergradient.check(levels[0])
        if tie and getattr(hypergradient, "fused", False):
            raise ValueError(
                "Stack(tie=True) steps in the reference's order only: "
                "OneStep(fused=True) needs an untied tower (tie=False)."
            )
    return hypergradient


def check_array_leaves(opts: tuple, states: tuple) -> None:
    """A tower's state holds arrays only: name a field that is not one."""
    for kind, items in (("optimiser", opts), ("optimiser state", states)):
        for k, item in enumerate(items):
            leaves = jax.tree_util.tree_leaves_with_path(item)
            for path, leaf in leaves:
                if not eqx.is_array(leaf):
                    raise TypeError(
                        f"The {kind} of level {k + 1} ({type(item).__name__}) holds "
                        f"{leaf!r} ({type(leaf).__name__}) at "
                        f"{jax.tree_util.keystr(path)}, which is not an array. Mark "
                        "plain Python settings `eqx.field(static=True)`, and make "
                        "numbers that change arrays."
                    )


def _check_tied_pers(opt: AbstractOptimiser) -> None:
    # A tied set updates itself: a per-layer, per-leaf or per-element value (one
    # per leaf of the model) applies to each tuned hyperparameter's own per-leaf
    # values, which a per-tree tuned hyperparameter (one scalar) does not have.
    fields = hyper_fields(opt)
    per_leaf = sorted(n for n, h in fields.items() if h.per != "tree")
    per_tree = sorted(n for n, h in fields.items() if h.per == "tree" and h.tune)
    if per_leaf and per_tree:
        raise ValueError(
            "Stack(tie=True): the tied hyperparameters update themselves, so a "
            f"per-layer, per-leaf or per-element hyperparameter "
            f"({', '.join(per_leaf)}) needs every tuned one to be one of those too; "
            f"{', '.join(per_tree)} {'is' if len(per_tree) == 1 else 'are'} "
            "per='tree'. Declare them with the same `per`, or use tie=False."
        )


def _as_given(opt: AbstractOptimiser) -> AbstractOptimiser:
    """`opt` with every hyperparameter marked given: `Adam()` and `Adam(1e-3)`
    differ only where `Stack[d]` chooses a start, which a tied tower does not."""
    names = [n for n, h in hyper_fields(opt).items() if not h.given]
    new = [dataclasses.replace(getattr(opt, n), given=True) for n in names]
    return eqx.tree_at(lambda o: [getattr(o, n) for n in names], opt, new)


def _identical(a: AbstractOptimiser, b: AbstractOptimiser) -> bool:
    if a is b:
        return True
    a, b = _as_given(a), _as_given(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    try:
        return bool(eqx.tree_equal(a, b))
    except jax.errors.ConcretizationTypeError:
        return False
