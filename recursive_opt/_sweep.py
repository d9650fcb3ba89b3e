"""`ro.sweep`: a population of towers with different initial hyperparameters, run
as one vmapped program, the population axis sharded across devices."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from ._checks import check_positive
from ._driver import drive, fetch, stack_history
from ._hyper import TRANSFORMS, hyper_fields, outside
from ._loop import Loop, normalise_key
from ._model import Model, _is_nnx, data_to_keys, keys_to_data
from ._stack import Stack
from ._state import brief
from ._wrappers import stack_of, stack_state, with_stack_state


@dataclasses.dataclass
class SweepResult:
    """What `ro.sweep` returns; every array has the population axis first.

    - `final_loss`: shape `(N,)`, each member's mean batch loss over its last
        `log_every` steps (non-finite if it diverged there).
    - `history`: as `FitResult.history`, each entry of shape `(N, records, ...)`.
    - `params`, `state`: the members' parameters and tower states, stacked.
    - `values`: the initial hyperparameter values swept, `name -> (N,)`; `seeds`.
    - `skipped`: `(N,)` steps skipped by the divergence guard; `stopped_at`: `(N,)`
        the first non-finite step of each member, or -1.
    """

    final_loss: np.ndarray
    history: dict[str, np.ndarray]
    params: PyTree
    state: PyTree
    values: dict[str, np.ndarray]
    seeds: np.ndarray | None
    skipped: np.ndarray
    stopped_at: np.ndarray

    def __repr__(self) -> str:  # the arrays are in the fields
        values = ", ".join(f"{k}={brief(v)}" for k, v in self.values.items())
        return (
            f"SweepResult(members={len(self.final_loss)}, {values}, "
            f"final_loss={brief(self.final_loss)}, skipped={brief(self.skipped)}, "
            f"history={sorted(self.history)}, params and state stacked)"
        )


def _check_over(tower, model: Model, over: dict, level: int, seeds) -> tuple[dict, int]:
    """`over` as NumPy arrays, checked against level `level`'s hyperparameters, and
    the population's size."""
    over, n = _check_values(tower, model, over, level)
    if seeds is not None:
        if n is not None and len(seeds) != n:
            raise ValueError(
                "Every array in `over` (and `seeds`) must have the same length."
            )
        n = len(seeds)
    if n is None:
        raise ValueError("sweep needs `over` (values to sweep) or `seeds`.")
    return over, n


def _check_values(tower, model: Model, over: dict, level: int):
    if not over:
        return {}, None
    tower = stack_of(tower)
    if not isinstance(tower, Stack):
        raise TypeError(
            "sweep `over` needs a recursive_opt optimiser or tower, whose "
            "hyperparameters are arrays; got an optax transformation."
        )
    state = tower.init(model.params)
    n_sets = 1 if state.tied else state.depth
    if (
        isinstance(level, bool)
        or not isinstance(level, int)
        or not 1 <= level <= n_sets
    ):
        extra = " (a tied tower has one shared set: level=1)" if state.tied else ""
        raise ValueError(
            f"level must be an integer from 1 to {n_sets}{extra}, got {level!r}."
        )
    fields = hyper_fields(state.opts[level - 1])
    out, size = {}, None
    for name, values in over.items():
        if name not in fields:
            raise ValueError(
                f"over: {name!r} is not a hyperparameter of level {level} "
                f"({type(state.opts[level - 1]).__name__}); it has {sorted(fields)}."
            )
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or len(arr) == 0:
            raise ValueError(
                f"over[{name!r}] must be a non-empty 1-D array, got shape {arr.shape}."
            )
        t = TRANSFORMS[fields[name].transform]
        bad = arr[~(np.isfinite(arr) & t.valid(arr))]
        if bad.size:
            raise ValueError(
                f"over[{name!r}] has values {bad.tolist()} outside the valid range "
                f"({t.valid_range}) of the {fields[name].transform!r} transform."
            )
        bounds = fields[name].bounds or (None, None)
        beyond = arr[outside(arr, bounds)]
        if beyond.size:
            raise ValueError(
                f"over[{name!r}] has values {beyond.tolist()} outside the bounds "
                f"{bounds} of level {level}'s {name!r} (`Stack[d](opt)` bounds "
                "an lr it tunes by 1 or its start, whichever is higher): build the "
                "tower at the largest value, or declare its bounds with `ro.hyper`."
            )
        if size is not None and len(arr) != size:
            raise ValueError(
                "Every array in `over` (and `seeds`) must have the same length."
            )
        size = len(arr)
        out[name] = arr
    return out, size


def _is_init_fn(params: Any) -> bool:
    return (
        callable(params) and not isinstance(params, eqx.Module) and not _is_nnx(params)
    )


def _population(
    loop: Loop, model: Model, params, over, level, seeds, n, key_data, impl
):
    """The population's carry, population axis first."""
    if seeds is None:
        base = loop.init(model.params, model.rest, key_data)
        carries = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), base)
    else:
        members = []
        for s in seeds:
            k = jr.key(int(s), impl=impl)
            m = Model(params(k)) if _is_init_fn(params) else model
            members.append(loop.init(m.params, m.rest, jr.key_data(jr.fold_in(k, 1))))
        carries = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    if over:
        state = jax.vmap(lambda s, v: s.set_hyperparams(level, v))(
            stack_state(carries.opt_state), over
        )
        state = with_stack_state(carries.opt_state, state)
        carries = dataclasses.replace(carries, opt_state=state)
    return carries


def sweep(
    loss_fn: Callable,
    params: Any,
    tower: Any,
    data: Any,
    *,
    steps: int,
    over: dict[str, Any] | None = None,
    level: int = 1,
    seeds: Sequence[int] | None = None,
    batch_size: int | None = None,
    key: Any = 0,
    has_aux: bool = False,
    log_every: int = 100,
    eval_data: Any = None,
    eval_fn: Callable | None = None,
    meta_data: Any = None,
    on_nonfinite: str = "skip",
    bounds: Any = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> SweepResult:
    """Train N copies of a model whose towers start from different hyperparameters.

    The N members run as one `jax.vmap`ped, jitted program. With several devices
    the population axis is sharded across them (a 1-D `Mesh` named `"pop"`); N
    need not divide the device count (the last member is repeated as padding).
    Under `jax.distributed.initialize` the mesh spans every process's devices.

    A member equals `ro.fit` run alone with its hyperparameters, seed and data,
    up to float rounding: the vmapped program is compiled differently. On a CPU
    that is float32's rounding, amplified by training (the tests see ~1e-6
    relative). On a GPU, float32 matrix products default to reduced precision
    (TF32) with algorithms chosen per program, which measured a 4.5e-4 relative
    difference in a final loss on an H200; under
    `jax.default_matmul_precision("highest")` they agree as on a CPU.

    **Arguments** (the rest as in `ro.fit`):

    - `over`: initial constrained values, `{"lr": array of N, ...}`, for the
        hyperparameters of level `level` (1 = the optimiser of the model).
    - `seeds`: N integer seeds. Member i then shuffles its data with its own key,
        and if `params` is a function of a PRNG key it is initialised with
        `params(jax.random.key(seed))`. Without seeds every member starts from the
        same `params` and sees the same batches, so members differ only in `over`.
    - `devices`: the devices to shard over (default: all).
    - `on_nonfinite`: as in `fit`, except that `"stop"` freezes a diverged member
        at its last finite state (see `stopped_at`) instead of raising.

    **Returns:** a `SweepResult`; `final_loss` has shape `(N,)`.

    ```python
    res = ro.sweep(loss_fn, params, ro.Stack[2](ro.Adam(1e-3)), (x, y),
                   steps=500, over={"lr": jnp.logspace(-4, 0, 12)})
    res.final_loss  # (12,)
    ```
    """
    check_positive("steps", steps)
    check_positive("log_every", log_every)
    seeds = _check_seeds(seeds, params)
    _, impl = normalise_key(key)
    template = (
        params(jr.key(int(seeds[0]), impl=impl)) if _is_init_fn(params) else params
    )
    model = Model(template)
    how = dict(has_aux=has_aux, on_nonfinite=on_nonfinite, bounds=bounds)
    loop, key_data = Loop.build(
        loss_fn, model, tower, data, batch_size, key, meta_data, **how
    )
    over, n = _check_over(loop.tower, model, dict(over or {}), level, seeds)
    carry = _population(loop, model, params, over, level, seeds, n, key_data, impl)
    carry, arrays = _shard(carry, loop.arrays, n, devices)
    records: list[dict[str, np.ndarray]] = []
    show = dict(eval_data=eval_data, eval_fn=eval_fn, progress=progress, desc=desc)
    carry, _ = drive(
        loop, carry, steps, log_every, records, 0, **show, arrays=arrays, population=n
    )
    history = {k: np.moveaxis(v, 0, 1) for k, v in stack_history(records).items()}
    fetched = jax.tree.map(lambda x: x[:n], fetch(keys_to_data(carry)))
    carry = data_to_keys(fetched, carry)
    return SweepResult(
        final_loss=history["loss"][:, -1],
        history=history,
        params=model.rebuild(carry.params, carry.rest),
        state=carry.opt_state,
        values=over,
        seeds=seeds,
        skipped=carry.skipped,
        stopped_at=carry.bad_step,
    )


def _check_seeds(seeds, params) -> np.ndarray | None:
    if seeds is not None:
        seeds = np.asarray(seeds)
        if (
            seeds.ndim != 1
            or not np.issubdtype(seeds.dtype, np.integer)
            or not len(seeds)
        ):
            raise ValueError(
                f"seeds must be a non-empty 1-D array of integers, got {seeds!r}."
            )
    if _is_init_fn(params) and seeds is None:
        raise ValueError("A params function (of a PRNG key) needs `seeds`.")
    return seeds


def _shard(carry, arrays, n: int, devices):
    """The population axis of `carry` sharded over `devices` (padded to a multiple
    of their number by repeating the last member); `arrays` replicated."""
    devices = list(devices) if devices is not None else jax.devices()
    pad = (-n) % len(devices)
    if pad:
        carry = jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), carry
        )
    mesh = Mesh(np.array(devices), ("pop",))
    carry = jax.device_put(carry, NamedSharding(mesh, PartitionSpec("pop")))
    return carry, jax.device_put(arrays, NamedSharding(mesh, PartitionSpec()))
