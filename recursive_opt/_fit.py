"""`ro.fit`: train a model with an optimiser or tower in jitted `lax.scan` chunks."""

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from jaxtyping import PyTree

from . import _checkpoint
from ._checks import check_positive
from ._driver import Timer, drive, stack_history
from ._guard import DivergenceError
from ._loop import Carry, Loop
from ._model import Model, copy_arrays


@dataclasses.dataclass
class FitResult:
    """What `ro.fit` returns.

    - `params`: the trained parameters, of the same kind as those passed in (a
        pytree, an Equinox module, or a new Flax NNX module); for optax's
        schedule-free optimisers the training sequence, whose evaluation point is
        `optax.contrib.schedule_free_eval_params(state, params)`.
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

    def __repr__(self) -> str:  # the arrays are in `.params`, `.state`, `.history`
        loss = self.history.get("loss")
        last = f", loss={float(loss[-1]):.4g}" if loss is not None and len(loss) else ""
        return (
            f"FitResult(step={self.step}, skipped={self.skipped}{last}, "
            f"ms_per_step={self.ms_per_step:.3g}, history={sorted(self.history)}, "
            f"params: {type(self.params).__name__}, "
            f"state: {type(self.state).__name__})"
        )


def _check_checkpointing(checkpoint_dir, checkpoint_every, log_every) -> None:
    check_positive("checkpoint_every", checkpoint_every, allow_none=True)
    if checkpoint_every is not None and checkpoint_every % log_every:
        raise ValueError(
            f"checkpoint_every ({checkpoint_every}) must be a multiple of log_every "
            f"({log_every}): checkpoints are written between chunks."
        )
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs a checkpoint_dir.")


def _resume(loop: Loop, carry: Carry, directory: str, steps: int, config: dict):
    """`(fingerprint, carry, records)`: from the newest checkpoint in `directory`
    that matches this run, or as given."""
    config = {
        **loop.data.describe(),
        "meta": None if loop.meta is None else loop.meta.describe(),
        "bounds": repr(loop.bounds),
        **config,
    }
    fprint = _checkpoint.fingerprint(carry, config)
    found = _checkpoint.load_latest(directory, carry, fprint)
    if found is None:
        return fprint, carry, []
    start, carry, history = found
    if start > steps:
        raise ValueError(
            f"The checkpoint in {directory} is at step {start}, beyond steps={steps}."
        )
    n = len(history.get("step", []))
    if loop.data.stream is not None:
        loop.data.skip(start)
    return fprint, carry, [{k: v[i] for k, v in history.items()} for i in range(n)]


def _warn_if_mostly_skipped(res: FitResult) -> None:
    if res.skipped > res.step / 2:
        warnings.warn(
            f"{res.skipped} of {res.step} steps were skipped: the loss, gradients, "
            "updates or optimiser state were not finite, and the model barely "
            "trained. Check the loss for NaNs, lower the learning rates or set "
            "bounds; on_nonfinite='stop' raises at the first such step.",
            stacklevel=3,
        )


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
    it records the history, evaluates, shows progress and writes checkpoints. The
    chunks are compiled once for a loss function, model structure, data size and
    kind of tower: a later call that differs only in values (the hyperparameters'
    initial values, the parameters, the data) reuses them.

    **Arguments:**

    - `loss_fn`: `loss_fn(params, batch) -> loss`, or `-> (loss, aux)` with
        `has_aux=True`. It receives the model as passed in (pytree, Equinox or Flax
        NNX module).
    - `params`: a pytree of arrays, an Equinox module (its floating-point arrays
        are trained) or a Flax NNX module (its `nnx.Param`s are trained; its other
        state, such as batch statistics, is carried along).
    - `tower`: a `ro.Stack`, a `ro.HoldCuts` (given each batch's loss), a
        `ro.DistanceFloor`, a recursive_opt optimiser, or any optax
        transformation (or
        `optax.MultiSteps`). One with extra arguments gets optax's: the batch
        loss as `value=`, the gradient as `grad=` and the batch's loss as a
        function of the parameters as `value_fn=` (`reduce_on_plateau`,
        `optax.lbfgs`).
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
    res.history["loss"]            # one entry per record
    res.history["level1/lr['w']"]  # level 1's lr of params["w"] (one per array,
                                   # equal within a layer)
    ```
    """
    check_positive("steps", steps)
    check_positive("log_every", log_every)
    _check_checkpointing(checkpoint_dir, checkpoint_every, log_every)
    model = Model(params)
    # The chunks donate their carry: never the caller's own arrays.
    model.params, model.rest = copy_arrays((model.params, model.rest))
    how = dict(has_aux=has_aux, on_nonfinite=on_nonfinite, bounds=bounds)
    loop, key_data = Loop.build(
        loss_fn, model, tower, data, batch_size, key, meta_data, **how
    )
    carry, records, fprint = loop.init(model.params, model.rest, key_data), [], None
    if checkpoint_dir is not None:
        config = dict(log_every=log_every, has_aux=has_aux, on_nonfinite=on_nonfinite)
        config["eval"] = eval_data is not None
        fprint, carry, records = _resume(loop, carry, checkpoint_dir, steps, config)

    result = functools.partial(_result, model, records)

    def after_chunk(carry: Carry, done: int, timer: Timer) -> None:
        if on_nonfinite == "stop" and int(carry.bad_step) >= 0:
            raise _diverged(int(carry.bad_step), result(carry, timer))
        if checkpoint_dir is not None and (
            done == steps or (checkpoint_every and done % checkpoint_every == 0)
        ):
            history = stack_history(records)
            _checkpoint.save(checkpoint_dir, done, carry, history, fprint)

    show = dict(eval_data=eval_data, eval_fn=eval_fn, progress=progress, desc=desc)
    start = int(carry.step)
    carry, timer = drive(
        loop, carry, steps, log_every, records, start, **show, after_chunk=after_chunk
    )
    res = result(carry, timer)
    _warn_if_mostly_skipped(res)
    return res


def _result(model: Model, records: list, carry: Carry, timer: Timer) -> FitResult:
    return FitResult(
        model.rebuild(carry.params, carry.rest),
        carry.opt_state,
        stack_history(records),
        int(carry.skipped),
        int(carry.step),
        timer.ms_per_step,
    )


def _diverged(step: int, result: FitResult) -> DivergenceError:
    return DivergenceError(
        f"Step {step} (counting from 0): the loss, gradients, updates or optimiser "
        "state are not finite; training stopped there (on_nonfinite='stop'). Lower "
        "the learning rates, set bounds, or use on_nonfinite='skip'.",
        step,
        result,
    )
