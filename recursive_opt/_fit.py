"""`ro.fit`: train a model with an optimiser or tower in jitted `lax.scan` chunks."""

import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jaxtyping import PyTree

from . import _checkpoint
from ._guard import DivergenceError
from ._loop import Carry, Loop
from ._model import Model, copy_arrays


@dataclasses.dataclass
class FitResult:
    """What `ro.fit` returns.

    - `params`: the trained parameters, of the same kind as those passed in (a
        pytree, an Equinox module, or a new Flax NNX module).
    - `state`: the optimiser's or tower's state (read it with `ro.hyperparams`).
    - `history`: a dict of NumPy arrays with one entry per record (every
        `log_every` steps and at the end): `"step"`, `"loss"` (the mean batch loss
        since the previous record), `"skipped"` (non-finite steps so far), every
        level's hyperparameters as `"level<k>/<name>"`, means of floating-point aux
        outputs as `"aux..."`, and evaluations as `"eval"` or `"eval/<name>"`.
    - `skipped`: the number of steps the divergence guard skipped.
    - `step`: the number of steps taken.
    - `ms_per_step`: wall-clock milliseconds per step, the median over chunks
        that did not compile (including the time to fetch each chunk's record).
    """

    params: Any
    state: PyTree
    history: dict[str, np.ndarray]
    skipped: int
    step: int
    ms_per_step: float


def _check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


class _Timer:
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


def stack_history(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not records:
        return {}
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


def fit(
    loss_fn: Callable,
    params: Any,
    tower: Any,
    data: Any,
    *,
    steps: int,
    batch_size: int | None = None,
    key: Any = 0,
    has_aux: bool = False,
    log_every: int = 100,
    eval_data: Any = None,
    eval_fn: Callable | None = None,
    meta_data: Any = None,
    on_nonfinite: str = "skip",
    bounds: Any = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> FitResult:
    """Train `params` to minimise `loss_fn` with an optimiser or tower.

    The loop runs as jitted `lax.scan` chunks of `log_every` steps; between chunks
    it records the history, evaluates, shows progress and writes checkpoints.

    **Arguments:**

    - `loss_fn`: `loss_fn(params, batch) -> loss`, or `-> (loss, aux)` with
        `has_aux=True`. It receives the model as passed in (pytree, Equinox or Flax
        NNX module).
    - `params`: a pytree of arrays, an Equinox module (its floating-point arrays
        are trained) or a Flax NNX module (its `nnx.Param`s are trained; its other
        state, such as batch statistics, is carried along).
    - `tower`: a `ro.Stack`, a recursive_opt optimiser, or any optax transformation.
    - `data`: arrays (a pytree whose leaves share their first axis, e.g. `(x, y)`),
        sampled in batches of `batch_size` (default: 128, or all examples if
        fewer) without replacement, reshuffled each epoch with `key`; or an
        iterator of batches (on resume, the batches already used are skipped by
        drawing them again).
    - `steps`: the total number of steps.
    - `key`: an int seed or a PRNG key for the data order (arrays only).
    - `log_every`: steps per jitted chunk and per history record.
    - `eval_data`, `eval_fn`: evaluated at each record; `eval_fn(model, eval_data)`
        returns a scalar or a dict of scalars (default: `loss_fn`).
    - `meta_data`: a held-out split (arrays, as `data`) for a tower's level-1
        hypergradient: each step samples a batch of it (its own reshuffled
        epochs) and the hypergradient follows `loss_fn` there instead of on the
        training batch (see `Stack.step`'s `meta_batch`).
    - `on_nonfinite`: `"skip"` (default) leaves parameters and state as they were
        when the loss, gradients, updates or new state are not finite, and counts
        it; `"stop"` raises `ro.DivergenceError` naming the step; `"ignore"` checks
        nothing.
    - `bounds`: keep hyperparameters in ranges, e.g. `{"lr": (1e-8, 10.0)}` for
        every level, or a list with one such dict per level. The tower enforces
        them when the level above writes a new value (and at the start), so the
        model never steps with a value out of range (as `ro.hyper(v, bounds=...)`).
    - `checkpoint_dir`, `checkpoint_every`: write a checkpoint every
        `checkpoint_every` steps (a multiple of `log_every`) and at the end; a run
        started again with the same arguments resumes from the newest one and ends
        bit-identical to an uninterrupted run.
    - `progress`: show a progress bar (tqdm) with the step, loss and level-1 lr.

    **Returns:** a `FitResult` with `.params`, `.state`, `.history`.

    ```python
    res = ro.fit(loss_fn, params, ro.Stack[3](ro.Adam(1e-3)), (x, y), steps=1000)
    res.history["level1/lr"]
    ```
    """
    _check_positive("steps", steps)
    _check_positive("log_every", log_every)
    _check_positive("checkpoint_every", checkpoint_every, allow_none=True)
    if checkpoint_every is not None and checkpoint_every % log_every:
        raise ValueError(
            f"checkpoint_every ({checkpoint_every}) must be a multiple of log_every "
            f"({log_every}): checkpoints are written between chunks."
        )
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs a checkpoint_dir.")
    model = Model(params)
    # The chunks donate their carry: never the caller's own arrays.
    model.params, model.rest = copy_arrays((model.params, model.rest))
    loop, key_data = Loop.build(
        loss_fn,
        model,
        tower,
        data,
        batch_size,
        key,
        meta_data,
        has_aux=has_aux,
        on_nonfinite=on_nonfinite,
        bounds=bounds,
    )
    source = loop.data
    carry = loop.init(model.params, model.rest, key_data)
    arrays = loop.arrays
    chunk = jax.jit(loop.chunk, static_argnums=3, donate_argnums=0)
    evaluate = jax.jit(lambda p, r, d: loop.evaluate(p, r, d, eval_fn))
    records: list[dict[str, np.ndarray]] = []

    fprint = None
    if checkpoint_dir is not None:
        config = {
            **source.describe(),
            "meta": None if loop.meta is None else loop.meta.describe(),
            "log_every": log_every,
            "has_aux": has_aux,
            "on_nonfinite": on_nonfinite,
            "bounds": repr(loop.bounds),
            "eval": eval_data is not None,
        }
        fprint = _checkpoint.fingerprint(carry, config)
        found = _checkpoint.load_latest(checkpoint_dir, carry, fprint)
        if found is not None:
            start, carry, history = found
            if start > steps:
                raise ValueError(
                    f"The checkpoint in {checkpoint_dir} is at step {start}, beyond "
                    f"steps={steps}."
                )
            n = len(history.get("step", []))
            records = [{k: v[i] for k, v in history.items()} for i in range(n)]
            if source.stream is not None:
                source.skip(start)

    def result(carry: Carry, timer: _Timer) -> FitResult:
        return FitResult(
            model.rebuild(carry.params, carry.rest),
            carry.opt_state,
            stack_history(records),
            int(carry.skipped),
            int(carry.step),
            timer.ms_per_step,
        )

    timer = _Timer()
    done = int(carry.step)
    bar = _progress(progress, steps, done, desc)
    try:
        while done < steps:
            nxt = loop.next_chunk(done, steps, log_every)
            if nxt is None:
                warnings.warn(
                    f"The data iterator ended after {done} steps of {steps}.",
                    stacklevel=2,
                )
                break
            length, batches = nxt
            start_time = time.perf_counter()
            carry, record = chunk(carry, arrays, batches, length)
            record = jax.device_get(record)
            timer.add(length, time.perf_counter() - start_time)
            done += length
            record["step"] = np.asarray(done)
            if eval_data is not None:
                record.update(
                    jax.device_get(evaluate(carry.params, carry.rest, eval_data))
                )
            records.append(record)
            _show(bar, length, record)
            if on_nonfinite == "stop" and int(carry.bad_step) >= 0:
                bad = int(carry.bad_step)
                raise DivergenceError(
                    f"Step {bad} (counting from 0): the loss, gradients, updates or "
                    "optimiser state are not finite; training stopped there "
                    "(on_nonfinite='stop'). Lower "
                    "the learning rates, set bounds, or use on_nonfinite='skip'.",
                    bad,
                    result(carry, timer),
                )
            if checkpoint_dir is not None and (
                done == steps or (checkpoint_every and done % checkpoint_every == 0)
            ):
                _checkpoint.save(
                    checkpoint_dir, done, carry, stack_history(records), fprint
                )
    finally:
        if bar is not None:
            bar.close()
    res = result(carry, timer)
    if res.skipped > res.step / 2:
        warnings.warn(
            f"{res.skipped} of {res.step} steps were skipped: the loss, gradients, "
            "updates or optimiser state were not finite, and the model barely "
            "trained. Check the loss for NaNs, lower the learning rates or set "
            "bounds; on_nonfinite='stop' raises at the first such step.",
            stacklevel=2,
        )
    return res


def _progress(enabled: bool, total: int, initial: int, desc: str | None):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True
    )


def _show(bar, length: int, record: dict) -> None:
    if bar is None:
        return
    postfix = {"loss": f"{float(record['loss']):.4g}"}
    lr = record.get("level1/lr")
    if lr is not None:
        postfix["lr"] = f"{float(np.mean(lr)):.3g}"
    if int(record["skipped"]):
        postfix["skipped"] = int(record["skipped"])
    bar.set_postfix(postfix, refresh=False)
    bar.update(length)
