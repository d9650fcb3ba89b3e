"""The one-step hypergradient chain (`OneStep`): what a level keeps of its last
update, and the hypergradient of its hyperparameters that it gives the level
above.

The hypergradient is d update / d hp of the last step contracted with the
cotangent from below (the model's gradients, or the hypergradient of the level
below). For a rule elementwise in its hyperparameters
(`AbstractElementwiseOptimiser`: coordinate i of the update depends on coordinate
i of each broadcast value) d update / d hp is one array per tuned hyperparameter,
shaped like the updates: a column. Such a level keeps nothing when its optimiser
recomputes the columns from the new state alone (`columns_from_state`: the
learning rate's column of SGD with momentum, what a default SGD tower tunes;
`FromState`), just the step's gradients when it recomputes them cheaply
from those and the new state (`recompute_jacobian`; `LastStep`), or else the
columns themselves (`Jacobian`). All three are valid when the update was made at
the hyperparameters' *current* values: every untied level, and a tied tower's
model step. Any other
rule, and a tied tower's self-update, keeps the step's `Inputs` and is
re-evaluated under `jax.vjp`.
"""

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, PyTree

from .._custom_types import HyperParams, OptState, Updates
from .._hyper import (
    broadcast,
    broadcast_values,
    cast_like,
    map_scalars,
    tuned_raw,
    with_raw,
)
from .._optimiser import AbstractElementwiseOptimiser, AbstractOptimiser
from ._base import AbstractHypergradient


def _dtype_or_none(dtype: Any) -> Any:
    if dtype is None:
        return None
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"record_dtype must be a floating dtype, got {dtype}")
    if dtype.itemsize < 2:  # jax does not promote them implicitly, by design
        raise ValueError(
            f"record_dtype must have at least 16 bits (float32, bfloat16, "
            f"float16), got {dtype}: 8-bit floats have too few digits and too "
            "little range for a column of updates without a scale of its own"
        )
    return dtype


_LAYOUTS = ("stacked", "separate")


def _layout_or_none(layout: Any) -> str | None:
    if layout is not None and layout not in _LAYOUTS:
        raise ValueError(
            f"OneStep(record_layout=...) must be None or one of {_LAYOUTS}, got "
            f"{layout!r}"
        )
    return layout


def _stacked(layout: str | None) -> bool:
    """Whether stored columns are stacked: `layout`, or by the default backend."""
    if layout is None:
        return jax.default_backend() == "cpu"
    return layout == "stacked"


def _stacked_like(record) -> bool:
    """The layout of a record's stored columns (stacked where it stores none)."""
    record = record.record if isinstance(record, Scaled) else record
    return record.stacked if isinstance(record, (Jacobian, LastStep)) else True


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"OneStep(fused=...) needs True or False, got {value!r}")
    return value


# (the leaf's record, its cotangent, whether each name's value is a scalar there,
#  the contraction `dots`) -> each name's cotangent: a scalar's contribution (a
#  row of `dots`' result) or an array
LeafProducts = Callable[[PyTree, Array, tuple[bool, ...], Callable], tuple[Array, ...]]


def _hypergrad(
    opt: AbstractOptimiser,
    names: tuple[str, ...],
    cotangent: PyTree[Array],
    record: PyTree,
    products: LeafProducts,
    rows_in_pass: bool = False,
) -> HyperParams:
    """d raw hp of `sum(cotangent * update)`, from each leaf's columns;
    `rows_in_pass`: see `_contract`."""

    def spread(raw):  # raw values -> their values laid over the leaves
        o = with_raw(opt, raw)
        return {n: broadcast(getattr(o, n).value, cotangent) for n in names}

    spread_values, vjp = jax.vjp(spread, tuned_raw(opt))
    treedef = jax.tree.structure(cotangent)
    cots = treedef.flatten_up_to(cotangent)
    recs = treedef.flatten_up_to(record)
    scalars = [
        tuple(jnp.ndim(v) == 0 for v in vs)
        for vs in zip(*[treedef.flatten_up_to(spread_values[n]) for n in names])
    ]
    per_leaf = _contract(
        lambda dots: [products(*a, dots) for a in zip(recs, cots, scalars)],
        scalars,
        rows_in_pass,
    )
    cot_values = {
        n: cast_like(treedef.unflatten([t[i] for t in per_leaf]), spread_values[n])
        for i, n in enumerate(names)
    }
    return vjp(cot_values)[0]


# On a CPU, leaves with at least this many elements are contracted by
# reductions, smaller ones by matrix-vector products. On XLA:CPU a product
# copies its vector first (a pass over the leaf, measurable on
# multi-million-element leaves), and each reduction has a fixed cost
# (measurable on models with many small leaves).
_LARGE = 2**18
# Elsewhere (a GPU), a leaf's scalar products are summed in rows of at most this
# many elements, and every leaf's row sums (or, on leaves this small, its
# products) in one last reduction: a kernel per larger leaf and one for all,
# where a reduction per leaf takes one kernel, or two for a long one (XLA splits
# it), each a launch of its own on a step's critical path. Compiled for an H200,
# the transformer step of `benchmarks/accelerator.py` (39 leaves) launches 32
# kernels more than optax Adam's step against 63 per leaf.
_ROW = 8192
# Which contraction (tests set it to check the other's on a CPU): by the platform
# the program is compiled for (None), per leaf (False) or batched (True).
_BATCHED: bool | None = None


def _dots(stacked: Array, cot: Array) -> Array:
    """`stacked[i] . cot` for each i."""
    if cot.size < _LARGE:
        return stacked.reshape(len(stacked), -1) @ cot.reshape(-1)
    return jnp.sum(stacked * cot[None], axis=tuple(range(1, stacked.ndim)))


def _row_sums(stacked: Array, cot: Array, small: bool = False) -> Array:
    """Per i, `stacked[i] * cot` summed in rows of at most `_ROW` elements (the
    whole leaf where its size has no divisor that makes few enough rows, or
    where it has at most `_ROW` elements and `small`; else such a leaf's
    products as they are), the rows' sums in float32 or wider: `stacked[i] .
    cot` is their sum."""
    n = cot.size
    dtype = jnp.promote_types(jnp.result_type(stacked, cot), jnp.float32)
    products = (stacked.reshape(len(stacked), n) * cot.reshape(1, n)).astype(dtype)
    if n <= _ROW:
        return products.sum(1, keepdims=True) if small else products
    row = next(b for b in range(_ROW, 0, -1) if n % b == 0)
    if n // row > _ROW:  # no such divisor: one sum, split as XLA splits it
        return products.sum(1, keepdims=True)
    return products.reshape(len(stacked), n // row, row).sum(-1)


def _contract(
    run: Callable[[Callable], list[tuple[Array, ...]]],
    scalars: list[tuple[bool, ...]],
    rows_in_pass: bool = False,
) -> list[tuple[Array, ...]]:
    """`run(dots)`, each leaf's products, with a contraction `dots` for the
    scalars among them: per leaf (`_dots`) on a CPU; elsewhere `_row_sums`, all
    leaves' rows then summed in one reduction. `rows_in_pass` (the fused order,
    where the pass that reads a leaf's columns is its update, which writes over
    what they are made of): every leaf summed into rows, small ones too, which
    XLA does in that pass; the last reduction would read them after it."""

    at = [(i, j) for i, sc in enumerate(scalars) for j, s in enumerate(sc) if s]

    def per_leaf():
        out = [list(t) for t in run(_dots)]
        for i, j in at:  # as the batched sums are (exact: a widening cast)
            out[i][j] = out[i][j].astype(jnp.promote_types(out[i][j].dtype, "float32"))
        return [tuple(t) for t in out]

    def batched():
        out = [list(t) for t in run(functools.partial(_row_sums, small=rows_in_pass))]
        if at:
            rows = [out[i][j] for i, j in at]
            width = max(r.shape[-1] for r in rows)
            padded = [jnp.pad(r, (0, width - r.shape[-1])) for r in rows]
            sums = jnp.stack(padded).sum(1)
            # Each sum in its own row's dtype, as the per-leaf branch gives it
            # (a tree of float32 and float64 leaves).
            for k, (i, j) in enumerate(at):
                out[i][j] = sums[k].astype(rows[k].dtype)
        return [tuple(t) for t in out]

    if _BATCHED is not None:
        return batched() if _BATCHED else per_leaf()
    return jax.lax.platform_dependent(cpu=per_leaf, default=batched)


class Jacobian(eqx.Module):
    """A level's last columns d update / d hp.

    `stacked`: per leaf, one array shaped like the updates with a leading axis
    over the tuned names, or a tuple of arrays shaped like the updates, one per
    name (`OneStep(record_layout=...)`). Stacked keeps the state's leaf count,
    and so jit's dispatch cost per call, down; separate columns let a GPU's XLA
    write them in the update's own pass."""

    jac: PyTree[Array]
    names: tuple[str, ...] = eqx.field(static=True)
    stacked: bool = eqx.field(static=True, default=True)

    def hypergrad(
        self,
        opt: AbstractOptimiser,
        state: OptState,
        cotangent: PyTree,
        rows_in_pass: bool = False,
    ) -> HyperParams:
        del state

        def products(jac, cot, scalar, contraction):
            # The scalar values' products are one contraction per leaf; stacked
            # inside it, separate columns are read where the reduction reads them.
            stack = jac if self.stacked else jnp.stack(jac)
            dots = contraction(stack, cot) if any(scalar) else None
            return tuple(dots[i] if s else jac[i] * cot for i, s in enumerate(scalar))

        return _hypergrad(opt, self.names, cotangent, self.jac, products, rows_in_pass)


class LastStep(eqx.Module):
    """A level's last gradients (and parameters, if its rule reads them), from
    which and its new state its optimiser recomputes the columns. `stacked`: the
    layout's contraction (`OneStep(record_layout=...)`): on large leaves one
    reduction per column, or the columns stacked inside one contraction."""

    grads: PyTree[Array]
    params: PyTree[Array] | None
    names: tuple[str, ...] = eqx.field(static=True)
    stacked: bool = eqx.field(static=True, default=True)

    def hypergrad(
        self,
        opt: AbstractOptimiser,
        state: OptState,
        cotangent: PyTree,
        rows_in_pass: bool = False,
    ) -> HyperParams:
        hp = broadcast_values(opt, self.grads)
        columns = opt.jacobian_after(self.grads, state, self.params, hp, self.names)
        # Per leaf, the tuple of its columns in the order of `names`.
        record = jax.tree.map(lambda *cs: cs, *[columns[n] for n in self.names])

        def products(cols, cot, scalar, contraction):
            if contraction is _dots and cot.size >= _LARGE and self.stacked:
                # on XLA:CPU, `jnp.stack` would write a new array; XLA on a GPU
                # reads it inside the sum
                return tuple(
                    jnp.sum(c * cot) if s else c * cot for c, s in zip(cols, scalar)
                )
            dots = contraction(jnp.stack(cols), cot) if any(scalar) else None
            return tuple(
                dots[i] if s else c * cot for i, (c, s) in enumerate(zip(cols, scalar))
            )

        return _hypergrad(opt, self.names, cotangent, record, products, rows_in_pass)


class FromState(eqx.Module):
    """Nothing of the last step: its optimiser recomputes the columns from the
    state that step wrote (`columns_from_state`), which the next step reads
    anyway. Such a level's record costs no memory and no extra bytes beyond the
    pass that contracts the columns with the next gradients."""

    names: tuple[str, ...] = eqx.field(static=True)

    def hypergrad(
        self,
        opt: AbstractOptimiser,
        state: OptState,
        cotangent: PyTree,
        rows_in_pass: bool = False,
    ) -> HyperParams:
        # The cotangent stands in for the step's gradients as a template only.
        last = LastStep(cotangent, None, self.names)
        return last.hypergrad(opt, state, cotangent, rows_in_pass)


class Inputs(eqx.Module):
    """The inputs of a level's last update, held constant by the chain.

    For a tied tower's self-update, which was made at the hyperparameters' values
    *before* that update; the chain re-evaluates it at the current values.
    """

    grads: PyTree[Array]
    state: OptState
    params: PyTree[Array] | None  # kept only for rules that read their parameters

    def hypergrad(
        self,
        opt: AbstractOptimiser,
        state: OptState,
        cotangent: PyTree,
        rows_in_pass: bool = False,
    ) -> HyperParams:
        # `state` is the one after the update; the one before it is kept.
        del state, rows_in_pass

        def update_at(raw):
            return with_raw(opt, raw).update(self.grads, self.state, self.params)[0]

        _, vjp = jax.vjp(update_at, tuned_raw(opt))
        cotangent = jax.tree.map(lambda c, g: c.astype(g.dtype), cotangent, self.grads)
        return vjp(cotangent)[0]


def _from_state(opt, names, prefer_state):
    """Whether `opt` keeps nothing of a step for `names`' columns: where it can,
    if recomputing them is its choice (`recompute_jacobian`) or the caller's."""
    can = opt.columns_from_state(names)
    return can and (opt.recompute_jacobian or prefer_state)


def _laid_out(columns: tuple[Array, ...], stacked: bool) -> Array | tuple:
    """A leaf's columns as a record keeps them: one stacked array, or as they are."""
    return jnp.stack(columns) if stacked else columns


def step_record(
    opt, grads, state, params, dtype=None, prefer_state=False, stacked=True
) -> tuple[Updates, OptState, FromState | LastStep | Jacobian | Inputs]:
    """One update of `opt`, and what the next step's hypergradient needs of it;
    stored columns (`Jacobian`) in `dtype` if given, `stacked` or not (one
    column always is: the same array). `prefer_state`: recompute the columns
    from the state wherever the optimiser can."""
    if not isinstance(opt, AbstractElementwiseOptimiser):
        return step_inputs(opt, grads, state, params)
    names = tuple(tuned_raw(opt))
    stacked = stacked or len(names) == 1
    if _from_state(opt, names, prefer_state):
        updates, new_state = opt.update(grads, state, params)
        return updates, new_state, FromState(names)
    if opt.recompute_jacobian:
        updates, new_state = opt.update(grads, state, params)
        kept = params if opt.uses_params else None
        return updates, new_state, LastStep(grads, kept, names, stacked)
    hp = broadcast_values(opt, grads)
    updates, new_state = opt.rule(grads, state, params, hp)
    # The columns from the state the rule wrote, before it is cast back (16-bit
    # leaves: `compute_dtype`); kept in the gradients' dtypes unless `dtype`.
    columns = opt.jacobian_after(grads, new_state, params, hp, names)
    updates, new_state = cast_like(updates, grads), cast_like(new_state, state)

    def leaf(g, *cs):
        cs = tuple(c.astype(g.dtype if dtype is None else dtype) for c in cs)
        return _laid_out(cs, stacked)

    jac = jax.tree.map(leaf, grads, *[columns[n] for n in names])
    return updates, new_state, Jacobian(jac, names, stacked)


def step_inputs(opt, grads, state, params) -> tuple[Updates, OptState, Inputs]:
    updates, new_state = opt.update(grads, state, params)
    return updates, new_state, Inputs(grads, state, params if opt.uses_params else None)


def initial_record(
    opt, target, state, dtype=None, prefer_state=False, stacked=True
) -> FromState | LastStep | Jacobian | Inputs:
    """The record before any step, from `opt`'s initial `state` for `target`.

    Its hypergradient is not used (the tower passes 0 up at the first step)."""
    zeros = lambda: jax.tree.map(jnp.zeros_like, target)  # noqa: E731
    if not isinstance(opt, AbstractElementwiseOptimiser):
        return Inputs(zeros(), state, zeros() if opt.uses_params else None)
    names = tuple(tuned_raw(opt))
    stacked = stacked or len(names) == 1
    if _from_state(opt, names, prefer_state):
        return FromState(names)
    if opt.recompute_jacobian:
        kept = zeros() if opt.uses_params else None
        return LastStep(zeros(), kept, names, stacked)

    # From `zeros_like`: laid out over devices as the parameters are.
    def leaf(x):
        dtype_ = x.dtype if dtype is None else dtype
        return _laid_out(tuple(jnp.zeros_like(x, dtype_) for _ in names), stacked)

    return Jacobian(jax.tree.map(leaf, target), names, stacked)


def zero_unless(flag: Bool[Array, ""], tree: PyTree[Array]) -> PyTree[Array]:
    # A select, not a product: a non-finite value where `flag` is false is dropped.
    return jax.tree.map(lambda x: jnp.where(flag, x, jnp.zeros_like(x)), tree)


class Scaled(eqx.Module):
    """A record of a step whose updates were multiplied by `scale` (a tower's
    warm-up): its hypergradient is `scale` times the record's."""

    record: FromState | LastStep | Jacobian | Inputs
    scale: Array

    def hypergrad(self, opt, state, cotangent, rows_in_pass=False):
        out = self.record.hypergrad(opt, state, cotangent, rows_in_pass)
        return {
            n: map_scalars(lambda x: x * self.scale.astype(x.dtype), g)
            for n, g in out.items()
        }


def scaled(updates, scale):
    """`updates * scale`, in the updates' dtypes; `scale=None` leaves them."""
    if scale is None:
        return updates
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)


class OneStep(AbstractHypergradient):
    """The one-step hypergradient (the default): after a step, level 1's
    hyperparameters get d loss(θₜ₊₁) / d h through that step alone, with θₜ and
    the optimiser state held fixed (Baydin et al. 2018; Chandra et al. 2022).

    It needs only the model's gradients, so a tower with it is a drop-in optax
    transformation (`tower.update(grads, state, params)`). It is greedy: it
    favours what lowers the next loss, which biases learning rates low (Wu et
    al. 2018); see [`recursive_opt.RealTime`][] for a longer horizon. Its
    contraction over the model's arrays follows the platform the step is
    compiled for: a reduction per array on a CPU, one for all of them on
    others (fewer kernels on a GPU); the two agree to float rounding.

    **Arguments:**

    - `record_dtype`: the dtype in which level 1 stores its columns d update /
      d hyperparameter between steps, where its optimiser stores them (Adam:
      one parameter-sized array per tuned hyperparameter; SGD keeps no columns).
      None (the default) stores them in the parameters' dtype. `jnp.bfloat16`
      halves those arrays' memory and bytes; the hypergradient then carries
      bfloat16's relative rounding (about 4e-3) in each column
      (`benchmarks/bytes.py` measures both). 8-bit floats are refused.
    - `fused`: the order of a step. False (the default, the reference's order):
      level 1's hyperparameters move first, with the hypergradient of step t,
      and level 1 steps with the result, so the hypergradient (a reduction over
      every parameter) must be finished before the update pass starts: two
      passes over the parameters. True: level 1 steps with the hyperparameters
      it has, and the same hypergradient, which reads what that pass reads,
      moves them for step t+1, so both can be one pass. The hypergradients stay
      exact (the tower differentiates each step at the hyperparameters it used,
      and keeps the levels above's records one step longer); they act one step
      later. Untied towers only. Level 1 then also recomputes its columns from
      its state wherever it can instead of storing them (Adam with only its
      learning rate tuned: no stored column).
    - `record_layout`: how level 1 stores two or more columns per array leaf
      (one column, as for a learning rate alone, is kept as one array either
      way, so the default towers' states do not depend on it):
      `"stacked"`, one array with a leading axis over the tuned names, or
      `"separate"`, one array per name. None (the default) picks by the default
      backend when the tower's state is made (`init`): stacked on CPU, separate
      elsewhere. XLA on a GPU computes separate columns in the update's own
      pass (a fusion with several outputs) and stacks them only inside the
      contraction that reads them, while a stacked column is written by a pass
      of its own that reads the gradients and the moments again (Adam with its
      betas, depth 3, the update applied to the parameters: 17 P -> 14 P, 2.43x
      -> 2.00x optax's bytes, the floor of this order; `benchmarks/bytes.py
      --target`); XLA:CPU, which does not fuse loops with several outputs,
      computes a stacked record in one loop and separate columns in several
      (20 P against 37 P). SGD with its momentum tuned keeps its gradients
      instead and recomputes the columns; the layout then says whether they
      are contracted one reduction each or stacked inside one contraction.
      The layout is part of the state's structure: a state
      (or a checkpoint of one) made under one layout restores only into a tower
      of the same layout; pin it when a state moves between backends.

    ```python
    tower = ro.Stack(ro.Adam(1e-3), ro.Adam(1e-2), hypergradient=ro.OneStep())
    ro.Stack[3](ro.Adam(), hypergradient=ro.OneStep(record_dtype=jnp.bfloat16))
    ro.Stack[3](ro.Adam(), hypergradient=ro.OneStep(fused=True))
    separate = ro.OneStep(record_layout="separate")
    ro.Stack[3](ro.Adam(b1=ro.hyper(0.9)), hypergradient=separate)
    ```
    """

    record_dtype: Any = eqx.field(static=True, default=None, converter=_dtype_or_none)
    fused: bool = eqx.field(static=True, default=False, converter=_flag)
    record_layout: str | None = eqx.field(
        static=True, default=None, converter=_layout_or_none
    )

    def init(self, opt, params, state, scaled=False):
        record = initial_record(
            opt,
            params,
            state,
            self.record_dtype,
            prefer_state=self.fused,
            stacked=_stacked(self.record_layout),
        )
        return (
            Scaled(record, jnp.zeros([], jnp.result_type(float))) if scaled else record
        )

    def hypergrad(self, opt, state, record, grads):
        return record.hypergrad(opt, state, grads, rows_in_pass=self.fused)

    def step(
        self, opt, grads, state, params, record, hvps=None, scale=None, cotangent=None
    ):
        del hvps, cotangent
        updates, new_state, record = step_record(
            opt,
            grads,
            state,
            params,
            self.record_dtype,
            prefer_state=self.fused,
            stacked=_stacked_like(record),
        )
        if scale is None:
            return updates, new_state, record
        return scaled(updates, scale), new_state, Scaled(record, scale)
