"""The host loop behind `ro.fit` and `ro.sweep`.

Both run a `Loop` as jitted chunks of `log_every` steps; between chunks the driver
fetches the chunk's record, evaluates, shows progress and hands the carry to the
front end's `after_chunk` (checkpoints, stopping on divergence). A population (a
sweep) vmaps the chunk and the evaluation over the carry's leading axis.
"""

import collections
import functools
import time
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import PyTree

from ._loop import Carry, Loop, Program, mean_lr


class Timer:
    """Milliseconds per step: the median over chunks that did not compile."""

    def __init__(self):
        self.seen: set[int] = set()
        self.rates: list[float] = []
        self.total, self.total_steps = 0.0, 0

    def add(self, length: int, seconds: float) -> None:
        self.total += seconds
        self.total_steps += length
        if length in self.seen:
            self.rates.append(seconds / length)
        self.seen.add(length)

    @property
    def ms_per_step(self) -> float:
        if self.rates:
            return 1e3 * float(np.median(self.rates))
        return 1e3 * self.total / self.total_steps if self.total_steps else float("nan")


def fetch(tree: PyTree) -> PyTree:
    """To host NumPy, gathering across processes when a leaf spans several hosts."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def stack_history(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not records:
        return {}
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


_CACHE: collections.OrderedDict = collections.OrderedDict()
CACHE_SIZE = 16  # programs kept compiled (each with its chunk lengths)


def _key(static: Program, population: bool, eval_fn) -> Hashable | None:
    """What a program's traced code depends on besides its arrays, or None when
    part of it cannot be hashed."""
    leaves, treedef = jax.tree.flatten(static)
    key = (treedef, tuple((type(x), x) for x in leaves), population, eval_fn)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def compiled(program: Program, population: int | None, eval_fn: Callable | None):
    """`(chunk, evaluate, arrays)`: the jitted chunk and evaluation of `program`
    and the arrays to pass them as its first argument.

    Both are cached (the last `CACHE_SIZE` programs) on everything but the
    program's arrays, so a run of the same loss function, model structure, data
    sizes and tower, whatever its hyperparameters' values, its parameters' and
    its data's, reuses the compiled chunks of an earlier one.
    """
    dynamic, static = eqx.partition(program, eqx.is_array)
    key = _key(static, population is not None, eval_fn)
    try:
        hit = key is not None and key in _CACHE
    except (TypeError, ValueError):  # e.g. arrays in static fields
        key, hit = None, False
    if key is None:  # compiled for this run alone, holding its arrays as constants
        dynamic = None
        combine = lambda dynamic: program  # noqa: E731
    else:
        if hit:
            _CACHE.move_to_end(key)
            return (*_CACHE[key], dynamic)
        combine = functools.partial(eqx.combine, static)

    def evaluate(dynamic, params, rest, data):
        return combine(dynamic).evaluate(params, rest, data, eval_fn)

    def chunk(dynamic, carry, arrays, batches, length):
        return combine(dynamic).chunk(carry, arrays, batches, length)

    if population is not None:
        one = chunk

        def chunk(dynamic, carry, arrays, batches, length):
            return jax.vmap(lambda c: one(dynamic, c, arrays, batches, length))(carry)

        evaluate = jax.vmap(evaluate, (None, 0, 0, None))
    fns = jax.jit(chunk, static_argnums=4, donate_argnums=1), jax.jit(evaluate)
    if key is not None:
        _CACHE[key] = fns
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return (*fns, dynamic)


def drive(
    loop: Loop,
    carry: Carry,
    steps: int,
    log_every: int,
    records: list[dict[str, np.ndarray]],
    start: int = 0,
    *,
    eval_data: Any,
    eval_fn: Callable | None,
    progress: bool,
    desc: str | None,
    after_chunk: Callable[[Carry, int, Timer], None] | None = None,
    arrays: Any = None,
    population: int | None = None,
) -> tuple[Carry, Timer]:
    """Run `loop` from `carry` (at step `start`) to `steps`, appending one record
    per chunk to `records`. `population` is the number of real members of a
    vmapped carry (padding members beyond it are dropped from the records)."""

    chunk, evaluate_jit, program = compiled(loop.program, population, eval_fn)
    arrays = loop.arrays if arrays is None else arrays

    def keep(record: dict) -> dict:  # on the host, without the padding members
        record = fetch(record)
        return (
            record
            if population is None
            else {k: v[:population] for k, v in record.items()}
        )

    timer, done = Timer(), start
    bar = _progress(progress, steps, done, desc)
    try:
        while done < steps:
            nxt = loop.next_chunk(done, steps, log_every)
            if nxt is None:
                message = f"The data iterator ended after {done} steps of {steps}."
                if population is not None:
                    raise ValueError(message)
                warnings.warn(message, stacklevel=3)
                break
            length, batches = nxt
            started = time.perf_counter()
            carry, record = chunk(program, carry, arrays, batches, length)
            record = keep(record)
            timer.add(length, time.perf_counter() - started)
            done += length
            if eval_data is not None:
                evaluated = evaluate_jit(program, carry.params, carry.rest, eval_data)
                record.update(keep(evaluated))
            step = np.asarray(done)
            record["step"] = step if population is None else np.full(population, done)
            records.append(record)
            _show(bar, length, record, population is not None)
            if after_chunk is not None:
                after_chunk(carry, done, timer)
    finally:
        if bar is not None:
            bar.close()
    return carry, timer


def _progress(enabled: bool, total: int, initial: int, desc: str | None):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True
    )


def _show(bar, length: int, record: dict, population: bool) -> None:
    if bar is None:
        return
    if population:
        postfix = {"median loss": f"{np.nanmedian(record['loss']):.4g}"}
    else:
        postfix = {"loss": f"{float(record['loss']):.4g}"}
        lr = mean_lr(record)
        if lr is not None:
            postfix["lr"] = f"{float(np.mean(lr)):.3g}"
        if int(record["skipped"]):
            postfix["skipped"] = int(record["skipped"])
    bar.set_postfix(postfix, refresh=False)
    bar.update(length)
