"""Trace and compile time of one jitted train step, by tower depth.

For each depth, a fresh jitted train step (MLP 784-128-10, batch 256) is lowered
(traced to StableHLO) and compiled; both are timed, best of `--repeats`. The
slope is a least-squares fit of seconds against depth; the goal is growth at most
linear in depth, read from the ratio of the last interval's slope to the first's.

    python benchmarks/compile_time.py [--depths 1,2,4,8,16] [--repeats 2]
        [--png benchmarks/compile_time.png]
"""

import argparse
import time

import jax.random as jr
import numpy as np
from _common import init_mlp, machine, make_step, next_to_me, pyplot, save, table

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--png", default=next_to_me("compile_time.png"))
    args = parser.parse_args()
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
