"""Level 1's cuts held while the loss is falling and noisy (`ro.HoldCuts`).

Over long runs on noisy problems the one-step hypergradient lowers the default
tower's lrs below a tuned constant one (benchmarks/README.md, "Long runs on noisy
tasks"). This script runs `Stack[3](Adam(lr))` as it is and wrapped in
`ro.HoldCuts(tower, ratio, start)`, which from step `start` on keeps level 1's
lrs from falling (raises pass) while both hold:

- the loss is falling: an average of the batch losses with decay 0.98 is below
  one with decay 0.995 (both debiased as Adam's moments are);
- the loss is noisy: R = E[(dL - p)^2] / E[p^2] > `--ratio`, where dL is the
  change of the batch loss from one step to the next and p = g . u the change
  the step predicted to first order (averages with decay 0.99). On a
  deterministic problem dL is about p, so R is small, even at the edge of
  stability; on minibatches dL is mostly the batches' difference.

`--rule both` is the first form measured: level 1's lrs held both ways (neither
cut nor raised), by a hand-written override in this script's loop.

Per task: the median / worst final train loss over the 12 starts, as a ratio to
tuned Adam's (the best of its 12-point grid), and the median test metric, for the
default tower and for each ratio.

    python benchmarks/trend_gate.py [--steps 1600] [--tasks sine,iris,flow,adding]
        [--ratio 10] [--start 200] [--seed 1] [--rule cuts|both]

`--tasks` takes task names, names of `tuning_free.py`'s sets (`fresh14`), or
`every` (the 51 tasks up to `fresh7`).
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import machine
from peers import kept_if_finite, losses_and_metrics
from tuning_free import (
    EXTRA_TASKS,
    LRS,
    SOLVED,
    TASK_SETS,
    TASKS,
    best_finite,
    makers_of,
    run_grid,
)

import recursive_opt as ro

SHORT, LONG, NOISE = 0.98, 0.995, 0.99  # decays of the three averages


def _sum(tree) -> jax.Array:
    return sum(jnp.sum(x) for x in jax.tree.leaves(tree))


def run_gated(
    task, lrs, steps: int, ratio: float | None, start: int, seed: int, rule="cuts"
):
    """Final train loss and test metric of `Stack[3](Adam(lr))` at every lr on the
    batches `peers.run_grid` draws with `seed`: as it is (`ratio` None), or with
    level 1's cuts held (`rule="cuts"`: `ro.HoldCuts(tower, ratio, start)`) or its
    lrs held both ways (`rule="both"`, the first form measured) while the loss
    falls and R > `ratio`."""
    x, y = (jnp.asarray(a) for a in task.train)
    n = len(x)
    keys = jr.split(jr.key(seed), steps)

    def one(lr):
        tower = ro.Stack[3](ro.Adam(lr))
        if ratio is not None and rule == "cuts":
            tower = ro.HoldCuts(tower, ratio, start)
        lr_of = ro.at_level(1)

        def body(carry, key):
            params, state, t, short, long, last, pred, num, den = carry
            idx = jr.randint(key, (task.batch,), 0, n)
            loss, grads = jax.value_and_grad(task.loss)(params, (x[idx], y[idx]))
            if isinstance(tower, ro.HoldCuts):
                updates, new_state = tower.update(grads, state, params, value=loss)
            else:
                updates, new_state = tower.update(grads, state, params)
            if ratio is not None and rule == "both":  # the rule by hand
                short = SHORT * short + (1 - SHORT) * loss
                long = LONG * long + (1 - LONG) * loss
                change = (loss - last - pred) ** 2
                num = jnp.where(t > 0, NOISE * num + (1 - NOISE) * change, num)
                den = jnp.where(t > 0, NOISE * den + (1 - NOISE) * pred**2, den)
                k = (t + 1).astype(loss.dtype)
                falling = short / (1 - SHORT**k) < long / (1 - LONG**k)
                hold = falling & (num > ratio * den) & (t >= start)
                old = optax.tree_utils.tree_get(state, "lr", filtering=lr_of)
                new = optax.tree_utils.tree_get(new_state, "lr", filtering=lr_of)
                kept = jax.tree.map(lambda a, b: jnp.where(hold, a, b), old, new)
                new_state = optax.tree_utils.tree_set(new_state, lr_of, lr=kept)
                pred = _sum(jax.tree.map(jnp.multiply, grads, updates))
            out = (optax.apply_updates(params, updates), new_state, t + 1)
            out = (*out, short, long, loss, pred, num, den)
            return kept_if_finite(loss, updates, out, carry), None

        z = jnp.zeros(())
        init = (task.params, tower.init(task.params), jnp.zeros((), jnp.int32))
        (params, *_), _ = jax.lax.scan(body, (*init, z, z, z, z, z, z), keys)
        return params

    return losses_and_metrics(task, one, lrs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--tasks", default="sine,iris,flow,adding")
    parser.add_argument("--ratio", default="10")
    parser.add_argument("--start", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rule", choices=("cuts", "both"), default="cuts")
    args = parser.parse_args()
    earlier = ("heldout", "probes", "fresh", *(f"fresh{i}" for i in range(2, 8)))
    makers = {**TASKS, **EXTRA_TASKS, **makers_of(*earlier)}
    # The sets written after `every` was fixed (51 tasks), by task or set name.
    after = [s for s in TASK_SETS if s not in ("all", "raw", *earlier)]
    keys = [k for name in args.tasks.split(",") for k in TASK_SETS.get(name, [name])]
    if args.tasks == "every":
        keys = [k for k in makers if k not in EXTRA_TASKS]
    makers |= makers_of(*after)
    if unknown := [k for k in keys if k not in makers]:
        parser.error(f"unknown task(s) {unknown}; known: every, {list(makers)}")
    rows = {"default": None} | {f"R > {r}": float(r) for r in args.ratio.split(",")}
    what = "cuts held" if args.rule == "cuts" else "lrs held both ways"
    print(f"{machine()}; {args.steps} steps; seed {args.seed}; {what} from step "
          f"{args.start}\n")  # fmt: skip
    print("| task | tuned Adam: test metric | " + " | ".join(rows) + " |")
    print("|---" * (len(rows) + 2) + "|")
    for key in keys:
        t0 = time.time()
        task = makers[key]()
        loss, metric = run_grid(task, optax.adam, LRS, args.steps, seed=args.seed)
        best = max(best_finite(loss), SOLVED)
        i = int(np.nanargmin(np.where(np.isfinite(loss), loss, np.nan)))
        cells = []
        for ratio in rows.values():
            end, m = run_gated(
                task, LRS, args.steps, ratio, args.start, args.seed, args.rule
            )
            r = np.maximum(np.where(np.isfinite(end), end, np.inf), SOLVED) / best
            cells.append(f"{np.median(r):.2f} / {np.max(r):.2f} ({np.median(m):.4g})")
        print(f"| {task.name} | {metric[i]:.4g} | " + " | ".join(cells) + " |")
        print(f"{key}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
