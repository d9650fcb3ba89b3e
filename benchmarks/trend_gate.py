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

`--rule rise` is the other direction, also written out in this script's loop (not
in the library): after the warm-up (from step `--start`, 100 for this rule), level
1's lrs are multiplied by e^-0.1 at each step where the batch loss is rising: a
10-step mean of it (decay 0.9) exceeds a 50-step mean (decay 0.98), both
debiased from step `--start` + 1 and tested from 20 steps later, by more than
`--z` standard errors of the short mean (the batch loss's variance about the long
mean, decay 0.98, times 0.1 / 1.9). `--until` lists the steps after which the rule
stops (`none`: never); one row each.

Per task and seed: the median / worst final train loss over the 12 starts, as a
ratio to tuned Adam's (the best of its 12-point grid), and the median test
metric, for the default tower and for each row; each row but the default's also
gives the median number of steps at which its rule acted (cuts held, lrs held,
or cuts made). The script ends with a summary over every task and seed: targets
met (a median within 1.5x and a worst case within 3x of tuned Adam's loss, as
in `tuning_free.py`), geometric means, and each start's final loss as a ratio
to the default's on the same batches.

    python benchmarks/trend_gate.py [--steps 1600] [--tasks sine,iris,flow,adding]
        [--ratio 10] [--start 200] [--seeds 1] [--rule cuts|both]
    python benchmarks/trend_gate.py --rule rise|release [--z 0.5] [--until 300,none]
        [--steps 400] [--tasks all,fresh15] [--seeds 1,2,3]

`--rule release` tests the loss as `--rule rise` does, but where it rises it cuts
nothing itself: it lets level 2's cuts pass untested for that step (level 2's
gate `(0.9, 100, 1.0, 10**9)` instead of the default's `(0.9, 100, 1.0)`, on
the same arrays), so an lr falls only where the one-step signal asks for it too.

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
    GATE,
    LRS,
    SOLVED,
    TASK_SETS,
    TASKS,
    _level2,
    _lr_only,
    _upper,
    best_finite,
    makers_of,
    run_grid,
)

import recursive_opt as ro

SHORT, LONG, NOISE = 0.98, 0.995, 0.99  # decays of the three averages
# `--rule rise`: decays of the short and long means (and the variance), and the
# log of the factor on level 1's lrs at a step where the loss rises.
RISE_SHORT, RISE_LONG, RISE_CUT, RISE_WAIT = 0.9, 0.98, 0.1, 20


def _sum(tree) -> jax.Array:
    return sum(jnp.sum(x) for x in jax.tree.leaves(tree))


def run_gated(
    task,
    lrs,
    steps: int,
    ratio: float | None,
    start: int,
    seed: int,
    rule="cuts",
    z=0.5,
    until=None,
):
    """Final train loss and test metric of `Stack[3](Adam(lr))` at every lr on the
    batches `peers.run_grid` draws with `seed`: as it is (`ratio` None), or with
    level 1's cuts held (`rule="cuts"`: `ro.HoldCuts(tower, ratio, start)`) or its
    lrs held both ways (`rule="both"`, the first form measured) while the loss
    falls and R > `ratio`; or with them cut while the loss rises (`rule="rise"`,
    `ratio` unused, any value but None; from step `start` to step `until`). Also
    the number of steps cut (or held) at each lr."""
    x, y = (jnp.asarray(a) for a in task.train)
    n = len(x)
    keys = jr.split(jr.key(seed), steps)

    def one(lr):
        tower = ro.Stack[3](ro.Adam(lr))
        released = None
        if ratio is not None and rule == "release":  # level 2's cuts untested
            w, shape = tower.warmup, tower.warmup_shape
            levels = _lr_only(lr), _level2(gate=(*GATE[:3], 10**9)), _upper(0.01)
            released = ro.Stack(*levels, warmup=w, warmup_shape=shape)
            own = jax.tree.structure(released.init(task.params))
        if ratio is not None and rule == "cuts":
            tower = ro.HoldCuts(tower, ratio, start)
        lr_of = ro.at_level(1)

        def body(carry, key):
            params, state, t, short, long, last, pred, num, den, var, cuts = carry
            idx = jr.randint(key, (task.batch,), 0, n)
            loss, grads = jax.value_and_grad(task.loss)(params, (x[idx], y[idx]))
            if isinstance(tower, ro.HoldCuts):
                updates, new_state = tower.update(grads, state, params, value=loss)
                cuts = new_state.held  # steps at which a cut was held
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
                cuts = cuts + hold
            if ratio is not None and rule in ("rise", "release"):  # by hand
                late = t >= start
                k = jnp.maximum(t - start, 0).astype(jnp.float32) + 1
                short = jnp.where(late, RISE_SHORT * short + (1 - RISE_SHORT) * loss, 0)
                long = jnp.where(late, RISE_LONG * long + (1 - RISE_LONG) * loss, 0)
                sh, lh = short / (1 - RISE_SHORT**k), long / (1 - RISE_LONG**k)
                dev = (loss - lh) ** 2
                var = jnp.where(late, RISE_LONG * var + (1 - RISE_LONG) * dev, 0)
                se = jnp.sqrt(var / (1 - RISE_LONG**k) * (1 - RISE_SHORT) / 1.9)
                rising = late & (k > RISE_WAIT) & (sh - lh > z * se)
                if until is not None:
                    rising = rising & (t < until)
            if ratio is not None and rule == "release":
                # A tower's state carries its levels' settings (the gate among
                # them), so the released tower steps the same arrays in a state
                # of its own structure, and its result goes back to the default's.
                free = jax.tree.unflatten(own, jax.tree.leaves(state))
                free_updates, free = released.update(grads, free, params)
                free = jax.tree.unflatten(
                    jax.tree.structure(state), jax.tree.leaves(free)
                )
                pick = lambda a, b: jnp.where(rising, a, b)  # noqa: E731
                updates, new_state = jax.tree.map(
                    pick, (free_updates, free), (updates, new_state)
                )
                cuts = cuts + rising
            if ratio is not None and rule == "rise":
                lrs_now = optax.tree_utils.tree_get(new_state, "lr", filtering=lr_of)
                cut = jax.tree.map(
                    lambda a: jnp.where(rising, a * np.exp(-RISE_CUT), a), lrs_now
                )
                new_state = optax.tree_utils.tree_set(new_state, lr_of, lr=cut)
                cuts = cuts + rising
            out = (optax.apply_updates(params, updates), new_state, t + 1)
            out = (*out, short, long, loss, pred, num, den, var, cuts)
            return kept_if_finite(loss, updates, out, carry), None

        zero, count = jnp.zeros(()), jnp.zeros((), jnp.int32)
        init = (task.params, tower.init(task.params), count)
        (params, *_, cuts), _ = jax.lax.scan(body, (*init, *[zero] * 7, count), keys)
        return params, cuts

    return losses_and_metrics(task, one, lrs, with_aux=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--tasks", default="sine,iris,flow,adding")
    parser.add_argument("--ratio", default="10")
    parser.add_argument("--start", type=int, default=None)
    parser.add_argument("--seeds", "--seed", default="1")
    rules = ("cuts", "both", "rise", "release")
    parser.add_argument("--rule", choices=rules, default="cuts")
    parser.add_argument("--z", type=float, default=0.5)
    parser.add_argument("--until", default="300")
    args = parser.parse_args()
    start = (
        args.start
        if args.start is not None
        else 100
        if args.rule in ("rise", "release")
        else 200
    )
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
    rows = {"default": (None, None)}
    if args.rule in ("rise", "release"):
        for u in args.until.split(","):
            limit = None if u == "none" else int(u)
            end = "no end" if limit is None else f"to step {limit}"
            rows[f"{args.rule}, {end}"] = (0.0, limit)
        what = "cuts" if args.rule == "rise" else "level 2's cuts untested"
        what = f"{what} while the loss rises (z {args.z:g})"
    else:
        rows |= {f"R > {r}": (float(r), None) for r in args.ratio.split(",")}
        what = "cuts held" if args.rule == "cuts" else "lrs held both ways"
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{machine()}; {args.steps} steps; seeds {args.seeds}; {what} from step "
          f"{start}\n")  # fmt: skip
    print("| task | seed | tuned Adam: test metric | " + " | ".join(rows) + " |")
    print("|---" * (len(rows) + 3) + "|")
    medians = {r: [] for r in rows}
    worsts = {r: [] for r in rows}
    against = {r: [] for r in rows}  # each start's final loss over the default's
    for key in keys:
        t0 = time.time()
        task = makers[key]()
        for seed in seeds:
            loss, metric = run_grid(task, optax.adam, LRS, args.steps, seed=seed)
            best = max(best_finite(loss), SOLVED)
            i = int(np.nanargmin(np.where(np.isfinite(loss), loss, np.nan)))
            cells, base = [], None
            for row, (ratio, until) in rows.items():
                end, m, cuts = run_gated(
                    task, LRS, args.steps, ratio, start, seed, args.rule, args.z, until
                )
                end = np.maximum(np.where(np.isfinite(end), end, np.inf), SOLVED)
                r = end / best
                base = end if base is None else base
                medians[row].append(np.median(r))
                worsts[row].append(np.max(r))
                against[row].extend(end / base)
                cell = f"{np.median(r):.2f} / {np.max(r):.2f} ({np.median(m):.4g})"
                if ratio is not None:
                    cell += f", {np.median(cuts):g} steps"
                cells.append(cell)
            print(f"| {task.name} | {seed} | {metric[i]:.4g} | " + " | ".join(cells)
                  + " |", flush=True)  # fmt: skip
        print(f"{key}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print(
        "\n| row | targets | geometric means of medians / worst | each start "
        "against the default: geometric mean, better / worse by > 5 % |"
    )
    print("|---|---|---|---|")
    for row in rows:
        med, worst, vs = (
            np.array(a) for a in (medians[row], worsts[row], against[row])
        )
        hit = int(np.sum((med <= 1.5) & (worst <= 3)))
        geo = np.exp(np.mean(np.log(med))), np.exp(np.mean(np.log(worst)))
        geo = f"{geo[0]:.2f}x / {geo[1]:.2f}x"
        mean = np.exp(np.mean(np.log(vs)))
        moved = f"{mean:.3f}x, {int(np.sum(vs < 0.95))} / {int(np.sum(vs > 1.05))}"
        print(f"| {row} | {hit} of {len(med)} | {geo} | {moved} of {len(vs)} |")


if __name__ == "__main__":
    main()
