"""The host loop behind `ro.fit` and `ro.sweep`.

Both run a `Loop` as jitted chunks of `log_every` steps; between chunks the driver
fetches the chunk's record, evaluates, shows progress and hands the carry to the
front end's `after_chunk` (checkpoints, stopping on divergence). A population (a
sweep) vmaps the chunk and the evaluation over the carry's leading axis.
"""

import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import PyTree

from ._loop import Carry, Loop, mean_lr


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

    def evaluate(p, r, d):
        return loop.evaluate(p, r, d, eval_fn)

    if population is None:
        chunk, evaluate_jit = loop.chunk, jax.jit(evaluate)
    else:

        def chunk(c, arrays, batches, length):
            return jax.vmap(lambda c: loop.chunk(c, arrays, batches, length))(c)

        evaluate_jit = jax.jit(jax.vmap(evaluate, (0, 0, None)))
    chunk = jax.jit(chunk, static_argnums=3, donate_argnums=0)
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
            carry, record = chunk(carry, arrays, batches, length)
            record = keep(record)
            timer.add(length, time.perf_counter() - started)
            done += length
            if eval_data is not None:
                record.update(keep(evaluate_jit(carry.params, carry.rest, eval_data)))
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
