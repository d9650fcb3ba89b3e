"""Trace and compile time of one jitted train step, by tower depth.

For each depth, a fresh jitted train step (MLP 784-128-10, batch 256) is lowered
(traced to StableHLO) and compiled; both are timed, best of `--repeats`. The
slope is a least-squares fit of seconds against depth; the goal is growth at most
linear in depth, read from the ratio of the last interval's slope to the first's.

    python benchmarks/compile_time.py [--depths 1,2,4,8,16] [--repeats 2]
        [--png benchmarks/compile_time.png]
    python benchmarks/compile_time.py --blocks 3,6,12,24

`--blocks` instead times a transformer language model's train step (width 64,
sequence 32, batch 4; 6 arrays a block) by its number of blocks, for optax Adam,
the default tower `Stack[3](Adam())` (one lr per layer), the same with its
upper levels stepping the lrs leaf by leaf (as before they were stepped as
vectors: `recursive_opt._flat`) and one lr for the model.
"""

import argparse
import time

import jax
import jax.random as jr
import numpy as np
import optax
from _common import (
    init_mlp,
    machine,
    make_step,
    next_to_me,
    pyplot,
    save,
    table,
    upper_levels,
)

import recursive_opt as ro

FAMILIES = {
    "SGD-m": lambda: ro.SGD(0.01, momentum=0.9),
    "Adam": lambda: ro.Adam(1e-3),
}


def compile_seconds(tower, params, x, y) -> tuple[float, float]:
    tx = tower.as_optax()
    state = tx.init(params)
    step = make_step(tx)  # a new jit: nothing cached from before
    start = time.perf_counter()
    lowered = step.lower(params, state, x, y)
    traced = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    return traced, time.perf_counter() - start


def lm_seconds(make_tx, blocks: int, leafwise: bool = False) -> float:
    """Trace + compile seconds of a fresh jitted train step of the language model
    of `accelerator.py` with `blocks` blocks, width 64, sequence 32, batch 4."""
    from accelerator import init_lm, lm_loss

    params = init_lm(jr.key(0), blocks, 64, 32)
    tokens = jr.randint(jr.key(1), (4, 33), 0, 256)
    tx = make_tx()
    with upper_levels(vectors=not leafwise):
        state = tx.init(params)

        def step(params, state):
            updates, state = tx.update(jax.grad(lm_loss)(params, tokens), state, params)
            return optax.apply_updates(params, updates), state

        start = time.perf_counter()
        jax.jit(step).lower(params, state).compile()
        return time.perf_counter() - start


LM_TOWERS = {
    "optax Adam": (lambda: optax.adam(1e-3), False),
    "Stack[3](Adam())": (lambda: ro.Stack[3](ro.Adam()).as_optax(), False),
    "the same, upper levels leaf by leaf": (
        lambda: ro.Stack[3](ro.Adam()).as_optax(),
        True,
    ),
    "one lr for the model": (
        lambda: ro.Stack[3](ro.Adam(ro.hyper(1e-2, bounds=(None, 1.0)))).as_optax(),
        False,
    ),
}


def by_blocks(blocks: list[int], repeats: int) -> None:
    rows = []
    for n in blocks:
        secs = {
            name: min(lm_seconds(make, n, leafwise) for _ in range(repeats))
            for name, (make, leafwise) in LM_TOWERS.items()
        }
        base = secs["optax Adam"]
        rows.append(
            [n, 6 * n + 3] + [f"{t:.2f} ({t / base:.1f}x)" for t in secs.values()]
        )
        print(f"{n} blocks done", flush=True)
    print(f"\n{machine()}; transformer LM, width 64; best of {repeats}\n")
    print(table(["blocks", "leaves", *(f"{k}: s (x optax)" for k in LM_TOWERS)], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--png", default=next_to_me("compile_time.png"))
    parser.add_argument("--blocks", help="e.g. 3,6,12: by the model's size instead")
    args = parser.parse_args()
    if args.blocks:
        by_blocks([int(b) for b in args.blocks.split(",")], args.repeats)
        return
    depths = [int(d) for d in args.depths.split(",")]
    kx, ky, kp = jr.split(jr.key(0), 3)
    x, y = jr.normal(kx, (256, 784)), jr.randint(ky, (256,), 0, 10)
    params = init_mlp(kp)
    results = {}
    for family, make in FAMILIES.items():
        for tie in (False, True):
            for d in depths:
                if tie and d == 1:
                    continue
                best = min(
                    (
                        compile_seconds(ro.Stack(*[make()] * d, tie=tie), params, x, y)
                        for _ in range(args.repeats)
                    ),
                    key=sum,
                )
                results[(family, tie, d)] = best
                print(
                    f"{family} tie={tie} depth {d}: trace {best[0]:.2f} s, "
                    f"compile {best[1]:.2f} s",
                    flush=True,
                )
    print(f"\n{machine()}; MLP 784-128-10, batch 256; best of {args.repeats}\n")
    rows, fits = [], {}
    for family in FAMILIES:
        for tie in (False, True):
            ds = [d for d in depths if (family, tie, d) in results]
            total = np.array([sum(results[(family, tie, d)]) for d in ds])
            slope, intercept = np.polyfit(ds, total, 1)
            first = (total[1] - total[0]) / (ds[1] - ds[0])
            last = (total[-1] - total[-2]) / (ds[-1] - ds[-2])
            fits[(family, tie)] = (ds, total, slope, intercept)
            name = f"{family}{' tied' if tie else ''}"
            for d, t in zip(ds, total):
                trace, comp = results[(family, tie, d)]
                rows.append([name, d, f"{trace:.2f}", f"{comp:.2f}", f"{t:.2f}"])
            rows.append(
                [
                    name,
                    "slope",
                    "",
                    "",
                    f"{slope:.3f} s/level (last/first "
                    f"interval slope {last / first:.2f})",
                ]
            )
    print(table(["tower", "depth", "trace s", "compile s", "total s"], rows))
    if args.png:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, ((family, tie), (ds, total, slope, icpt)) in enumerate(fits.items()):
            ax.plot(
                ds,
                total,
                "o" if not tie else "s",
                color=f"C{i}",
                label=f"{family}{' tied' if tie else ''}: {slope:.2f} s/level",
            )
            ax.plot(ds, slope * np.array(ds) + icpt, color=f"C{i}", lw=0.8)
        ax.set(
            xlabel="depth",
            ylabel="trace + compile seconds",
            title="Compile time of one train step",
        )
        ax.legend(fontsize=8)
        save(fig, args.png)


if __name__ == "__main__":
    main()
