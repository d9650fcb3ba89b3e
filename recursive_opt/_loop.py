"""The training loop shared by `fit` and `sweep`: a guarded step, scanned in chunks.

One chunk is `length` steps under `jax.lax.scan`, compiled once per length. The
carry holds everything a run needs to continue (parameters, the rest of the
model's state, the optimiser or tower state, the PRNG key, the step and the guard's
counters), so a chunk is a pure function and a checkpoint is the carry.
"""

import collections.abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Int, PyTree

from ._guard import all_finite, bound, normalise_bounds
from ._model import Model, Skeleton, select
from ._optax import apply_updates, unaliased
from ._optimiser import AbstractOptimiser
from ._stack import Stack
from ._state import TowerState, hyperparams
from ._wrappers import WRAPPERS, after, stack_of, stack_state, with_stack

ON_NONFINITE = ("skip", "stop", "ignore")


class Carry(eqx.Module):
    params: PyTree
    rest: PyTree
    opt_state: PyTree
    key: Array  # raw key data
    step: Int[Array, ""]
    skipped: Int[Array, ""]
    bad_step: Int[Array, ""]  # the first non-finite step, or -1


def as_tower(tower: Any) -> Any:
    if isinstance(tower, AbstractOptimiser):
        return Stack(tower)  # Stack(opt) behaves exactly as opt.
    if isinstance(tower, (Stack, *WRAPPERS, optax.GradientTransformation)):
        return tower
    if isinstance(tower, optax.MultiSteps):  # a class of its own, not a transformation
        return tower.gradient_transformation()
    raise TypeError(
        "The optimiser must be a recursive_opt optimiser (ro.Adam(...)), a tower "
        "(ro.Stack[...](...), ro.HoldCuts(...), ro.DistanceFloor(...)) or an "
        "optax.GradientTransformation, "
        f"got {type(tower).__name__}."
    )


def update_with_optax_args(update: Callable, grads, state, params, **available):
    """`update(grads, state, params, **extra)` with as many of optax's conventional
    keyword arguments as it takes: all of `available` (`optax.lbfgs` reads
    `value=`, `grad=` and `value_fn=`), else `value=` alone (`reduce_on_plateau`;
    some optax versions' wrappers pass extra arguments through `lax.cond`, which
    a function such as `value_fn` cannot cross), else none (a transformation of
    extra arguments that takes none of these). If every try fails, the first
    error is raised."""
    tries = (available, {"value": available["value"]}, {})
    first = None
    for extra in tries:
        try:
            return update(grads, state, params, **extra)
        except TypeError as e:
            first = first or e
    raise first


def hyper_record(state: PyTree) -> dict[str, Array]:
    """Every level's constrained hyperparameters, as flat `level<k>/<name>` keys.

    A tied tower's one set is recorded once, as level 1. An optax state made by
    `optax.inject_hyperparams` gives its hyperparameters as level 1.
    """
    state = stack_state(state)
    if isinstance(state, TowerState):
        levels = hyperparams(state)[:1] if state.tied else hyperparams(state)
    else:
        kinds = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
        found = [
            s.hyperparams
            for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, kinds))
            if isinstance(s, kinds)
        ]
        levels = found[:1]
    out = {}
    for k, level in enumerate(levels, start=1):
        for name, value in level.items():
            for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
                if path and path[-1] == jax.tree_util.GetAttrKey("value"):
                    path = path[:-1]  # a Flax NNX variable's: `['l1']['kernel']`
                out[f"level{k}/{name}{jax.tree_util.keystr(path)}"] = jnp.asarray(leaf)
    return out


def mean_lr(history: dict, level: int = 1) -> np.ndarray | None:
    """Level `level`'s learning rate in a record or history: the value of
    `level<k>/lr`, or for one learning rate per leaf (`level<k>/lr['w']`, ...)
    their geometric mean (their mean where one is not positive, as an identity
    transform allows); None if there is none."""
    key = f"level{level}/lr"
    found = [
        v
        for k, v in history.items()
        if k == key or k.startswith((key + "[", key + "."))
    ]
    if not found:
        return None
    if len(found) == 1:
        return np.asarray(found[0])
    values = np.stack([np.asarray(v) for v in found])
    if np.all(values > 0):
        return np.exp(np.mean(np.log(values), axis=0))
    return np.mean(values, axis=0)


def normalise_key(key: Any) -> tuple[Array, Any]:
    """`(raw key data, impl)` from an int seed or a PRNG key."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jr.key(int(key))
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be an int seed or a jax PRNG key, got {key!r}.")
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.wrap_key_data(key)
    return jr.key_data(key), jr.key_impl(key)


class Data:
    """Training data: arrays sampled in reshuffled epochs, or an iterator of batches."""

    def __init__(self, data: Any, batch_size: int | None):
        if isinstance(data, collections.abc.Iterator):
            self.stream, self.arrays, self.n = data, None, None
            self.batch_size = None
            return
        leaves = jax.tree.leaves(data)
        if not leaves or not all(
            hasattr(x, "shape") and np.ndim(x) >= 1 for x in leaves
        ):
            raise TypeError(
                "data must be arrays (a pytree of arrays, e.g. a tuple (x, y), whose "
                "first axis indexes examples) or an iterator of batches, got "
                f"{type(data).__name__}."
            )
        sizes = {len(x) for x in leaves}
        if len(sizes) != 1:
            raise ValueError(
                f"data's arrays must have the same number of examples (first axis), "
                f"got {sorted(sizes)}."
            )
        (self.n,) = sizes
        if batch_size is None:
            batch_size = min(128, self.n)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not (1 <= batch_size <= self.n)
        ):
            raise ValueError(
                f"batch_size must be an integer from 1 to the number of examples "
                f"({self.n}), got {batch_size!r}."
            )
        self.batch_size = batch_size
        self.stream = None
        self.arrays = jax.tree.map(jnp.asarray, data)

    def describe(self) -> dict[str, Any]:
        if self.arrays is None:
            return {"data": "iterator"}
        shapes = [f"{x.dtype}{list(x.shape)}" for x in jax.tree.leaves(self.arrays)]
        return {"data": shapes, "batch_size": self.batch_size}

    def take(self, length: int) -> PyTree | None:
        """Up to `length` batches from the iterator, stacked; None when it is done."""
        batches = []
        for _ in range(length):
            try:
                batches.append(next(self.stream))
            except StopIteration:
                break
        if not batches:
            return None
        try:
            return jax.tree.map(
                lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches
            )
        except ValueError as e:
            raise ValueError(
                "The data iterator's batches must all have the same structure and "
                f"shapes (they are stacked into chunks for lax.scan): {e}"
            ) from e

    def skip(self, count: int) -> None:
        """Advance the iterator past the batches a checkpoint has already used."""
        for i in range(count):
            try:
                next(self.stream)
            except StopIteration:
                raise ValueError(
                    f"Resuming at step {count} needs to skip {count} batches of the "
                    f"data iterator, but it ended after {i}."
                ) from None


def batch_indices(key: Array, impl, start, length: int, n: int, batch_size: int):
    """Example indices of steps `start .. start + length`: shape (length, batch)."""
    per_epoch = n // batch_size
    steps = start + jnp.arange(length)
    first = start // per_epoch
    n_epochs = length // per_epoch + 2  # epochs a chunk can touch (static)
    key = jr.wrap_key_data(key, impl=impl)
    perms = jax.vmap(lambda e: jr.permutation(jr.fold_in(key, e), n))(
        first + jnp.arange(n_epochs)
    )

    def rows(epoch, pos):
        return jax.lax.dynamic_slice(
            perms[epoch - first], (pos * batch_size,), (batch_size,)
        )

    return jax.vmap(rows)(steps // per_epoch, steps % per_epoch)


def _aux_means(auxes: PyTree) -> dict[str, Array]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(auxes)[0]:
        if eqx.is_inexact_array(leaf):
            out[f"aux{jax.tree_util.keystr(path)}"] = jnp.mean(leaf, axis=0)
    return out


class Loop:
    """The pieces of a run that do not change between chunks."""

    def __init__(
        self,
        loss_fn: Callable,
        model: Model,
        tower,
        data: Data,
        *,
        has_aux: bool,
        on_nonfinite: str,
        bounds,
        key_impl,
        meta: "Data | None" = None,
    ):
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(
                f"on_nonfinite must be one of {ON_NONFINITE}, got {on_nonfinite!r}."
            )
        # Host-side pieces here; what the traced chunk uses is `self.program`.
        self.tower, self.data, self.meta = tower, data, meta
        self.bounds = normalise_bounds(bounds, stack_of(tower))
        if self.bounds is not None:  # enforced inside the tower, before each use
            self.tower = with_stack(tower, bound(stack_of(tower), self.bounds))
        self.program = Program(
            loss_fn,
            model.skeleton,
            self.tower,
            has_aux,
            on_nonfinite,
            key_impl,
            _sizes(data),
            None if meta is None else _sizes(meta),
        )

    @classmethod
    def build(
        cls, loss_fn, model: Model, tower, data, batch_size, key, meta_data, **options
    ):
        """A loop from `fit`/`sweep`'s arguments; also returns the raw key data."""
        key_data, impl = normalise_key(key)
        source = Data(data, batch_size)
        tower = as_tower(tower)
        meta = None
        if meta_data is not None:
            if source.arrays is None or isinstance(meta_data, collections.abc.Iterator):
                raise TypeError(
                    "meta_data needs data and meta_data given as arrays (a held-out "
                    "split sampled alongside the training batches), not iterators."
                )
            stack = stack_of(tower)
            if not isinstance(stack, Stack) or stack.depth < 2:
                raise ValueError(
                    "meta_data steers the hypergradient of a tower's level 1: it "
                    "needs a tower of depth >= 2 (ro.Stack[d](opt))."
                )
            meta = Data(meta_data, min(source.batch_size, Data(meta_data, 1).n))
        loop = cls(loss_fn, model, tower, source, key_impl=impl, meta=meta, **options)
        return loop, key_data

    @property
    def arrays(self):
        """What `chunk` samples from: the training arrays and the held-out ones."""
        return self.data.arrays, None if self.meta is None else self.meta.arrays

    def next_chunk(self, done: int, steps: int, log_every: int):
        """`(length, batches)` of the next chunk; batches is None for arrays and
        the whole result None when an iterator has run out."""
        length = min(log_every, steps - done)
        if self.data.stream is None:
            return length, None
        batches = self.data.take(length)
        if batches is None:
            return None
        return len(jax.tree.leaves(batches)[0]), batches

    def init(self, params: PyTree, rest: PyTree, key: Array) -> Carry:
        def scalar(v):  # separate buffers: the carry is donated
            return jnp.full([], v, jnp.int32)

        # An optax state may hold one array twice, or the parameters themselves
        # (prodigy keeps its starting point): those get buffers of their own, as
        # the carry is donated.
        state = unaliased(self.tower.init(params), (params, rest))
        return Carry(params, rest, state, key, scalar(0), scalar(0), scalar(-1))


def _sizes(data: Data) -> tuple[int, int] | None:
    return None if data.arrays is None else (data.n, data.batch_size)


class Program(eqx.Module):
    """What a chunk's traced code depends on, apart from its arguments: a pytree
    whose arrays (the tower's initial hyperparameters, a loss module's arrays)
    `drive` passes to the jitted chunk as arguments and whose other leaves and
    static fields key its compilation cache, so that a second run of the same
    loss and tower (its hyperparameters' values free to differ) compiles nothing."""

    loss_fn: Callable
    skeleton: Skeleton
    tower: Any
    has_aux: bool = eqx.field(static=True)
    on_nonfinite: str = eqx.field(static=True)
    key_impl: Any = eqx.field(static=True)
    sizes: tuple[int, int] | None = eqx.field(static=True)  # (examples, batch)
    meta_sizes: tuple[int, int] | None = eqx.field(static=True)

    def step(self, c: Carry, batch, meta_batch=None) -> tuple[Carry, tuple[Array, Any]]:
        static = []

        def grads_and_aux(params):  # aux: arrays only (a scheme may linearize it)
            out = self.skeleton.value_and_grad(
                self.loss_fn, self.has_aux, params, c.rest, batch
            )
            dynamic, rest = eqx.partition(out, eqx.is_array)
            static.append(rest)
            return out[2], dynamic

        stack = stack_of(self.tower)
        if isinstance(stack, Stack):  # a scheme may need the loss itself
            meta = None
            if meta_batch is not None:
                meta = self.skeleton.value_and_grad(
                    self.loss_fn, self.has_aux, c.params, c.rest, meta_batch
                )[2]
            updates, opt_state, dynamic = stack.step_with(
                grads_and_aux, c.params, stack_state(c.opt_state), meta
            )
        else:
            dynamic = grads_and_aux(c.params)[1]
        loss, aux, grads, rest = eqx.combine(dynamic, static[0])
        if isinstance(self.tower, WRAPPERS):
            opt_state = after(
                self.tower, c.opt_state, opt_state, grads, updates, c.params, loss
            )
        if isinstance(self.tower, optax.GradientTransformationExtraArgs):

            def value_fn(p):  # at the parameters' dtypes (a line search's
                # step size may promote them, with x64 on)
                p = jax.tree.map(lambda x, ref: x.astype(ref.dtype), p, c.params)
                return self.skeleton.value(self.loss_fn, self.has_aux, p, c.rest, batch)

            updates, opt_state = update_with_optax_args(
                self.tower.update,
                grads,
                c.opt_state,
                c.params,
                value=loss,
                grad=grads,
                value_fn=value_fn,
            )
        elif not isinstance(stack, Stack):
            updates, opt_state = self.tower.update(grads, c.opt_state, c.params)
        params = apply_updates(c.params, updates)
        new = (params, rest, opt_state)
        skipped, bad_step = c.skipped, c.bad_step
        if self.on_nonfinite != "ignore":
            ok = jnp.isfinite(loss) & all_finite((grads, updates, opt_state))
            live = c.bad_step < 0 if self.on_nonfinite == "stop" else jnp.array(True)
            new = select(ok & live, new, (c.params, c.rest, c.opt_state))
            skipped = skipped + (~ok & live).astype(jnp.int32)
            bad_step = jnp.where(~ok & (bad_step < 0), c.step, bad_step)
        c = Carry(*new, c.key, c.step + 1, skipped, bad_step)
        return c, (loss, aux)

    def chunk(self, c: Carry, arrays, batches, length: int) -> tuple[Carry, dict]:
        """`length` steps; returns the carry and this chunk's record."""
        arrays, meta_arrays = arrays
        if batches is None:
            n, batch_size = self.sizes
            idx = batch_indices(c.key, self.key_impl, c.step, length, n, batch_size)
            take = lambda xs, i: jax.tree.map(lambda a: a[i], xs)  # noqa: E731
            if meta_arrays is None:
                c, (losses, auxes) = jax.lax.scan(
                    lambda c, i: self.step(c, take(arrays, i)), c, idx
                )
            else:  # a held-out stream, in its own reshuffled epochs
                meta_n, meta_batch_size = self.meta_sizes
                key = jr.key_data(
                    jr.fold_in(jr.wrap_key_data(c.key, impl=self.key_impl), 1)
                )
                meta_idx = batch_indices(
                    key, self.key_impl, c.step, length, meta_n, meta_batch_size
                )
                c, (losses, auxes) = jax.lax.scan(
                    lambda c, ij: self.step(
                        c, take(arrays, ij[0]), take(meta_arrays, ij[1])
                    ),
                    c,
                    (idx, meta_idx),
                )
        else:
            c, (losses, auxes) = jax.lax.scan(lambda c, b: self.step(c, b), c, batches)
        record = {"loss": jnp.mean(losses), **_aux_means(auxes)}
        record.update(hyper_record(c.opt_state))
        record["skipped"] = c.skipped
        return c, record

    def evaluate(self, params, rest, eval_data, eval_fn) -> dict[str, Array]:
        model = self.skeleton.rebuild(params, rest)
        if eval_fn is None:
            out = self.loss_fn(model, eval_data)
            out = out[0] if self.has_aux else out
        else:
            out = eval_fn(model, eval_data)
        if isinstance(out, dict):
            return {f"eval/{k}": jnp.asarray(v) for k, v in out.items()}
        return {"eval": jnp.asarray(out)}
