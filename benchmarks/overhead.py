"""Overhead of towers over plain optax, per jitted train step, by depth.

Each variant's whole train step (forward, backward, optimiser or tower update,
parameter update) is one jitted function with donated buffers, called from Python
as a user would. Variants run in alternating blocks in one process; the table
gives the median over rounds of each variant's time divided by the plain optax
optimiser of its family in the same round (paired ratios are robust to the load
of a shared machine drifting). Families: SGD with momentum 0.9 and Adam; towers
of depth 1..D of the same optimiser, untied and tied. Models: the reference
paper's MLP (784-128-10, batch 256) and a ~4.8M-parameter MLP (784-2048-1536-10).

    python benchmarks/overhead.py [--depths 6] [--blocks 30] [--large-blocks 10]
        [--models paper,large] [--png benchmarks/overhead.png]
"""

import argparse
import statistics

import jax.random as jr
import optax
from _common import (
    LARGE_MLP,
    PAPER_MLP,
    init_mlp,
    machine,
    make_step,
    n_params,
    next_to_me,
    paired_ratio,
    pyplot,
    save,
    step_runner,
    table,
    time_alternating,
)

import recursive_opt as ro

FAMILIES = {
    "SGD-m": (optax.sgd(0.01, momentum=0.9), ro.SGD(0.01, momentum=0.9)),
    "Adam": (optax.adam(1e-3), ro.Adam(1e-3)),
}
GOALS = {"SGD-m": 1.15, "Adam": 1.30}


def variants(max_depth: int):
    """`name -> (family, optax transformation)`; the plain optax ones first."""
    out = {}
    for family, (plain, opt) in FAMILIES.items():
        out[f"optax {family}"] = (family, plain)
        for d in range(1, max_depth + 1):
            out[f"{family} d={d}"] = (family, ro.Stack[d](opt).as_optax())
            if d > 1:
                out[f"{family} d={d} tied"] = (
                    family,
                    ro.Stack[d](opt, tie=True).as_optax(),
                )
        if max_depth >= 3:  # the one-pass order, an option (OneStep(fused=True))
            fused = ro.Stack[3](opt, hypergradient=ro.OneStep(fused=True))
            out[f"{family} d=3 fused"] = (family, fused.as_optax())
            held = ro.HoldCuts(ro.Stack[3](opt))  # needs the loss: value=
            out[f"{family} d=3 HoldCuts"] = (family, held.as_optax())
            if opt.adaptive:  # its estimate is an lr on an adaptive rule's scale
                floor = ro.DistanceFloor(ro.Stack[3](opt))
                out[f"{family} d=3 DistanceFloor"] = (family, floor.as_optax())
    return out


def measure(sizes, batch: int, max_depth: int, blocks: int, steps: int):
    kx, ky, kp = jr.split(jr.key(0), 3)
    x = jr.normal(kx, (batch, sizes[0]))
    y = jr.randint(ky, (batch,), 0, sizes[-1])
    runs = {}
    table_variants = variants(max_depth)
    for name, (_, tx) in table_variants.items():
        params = init_mlp(kp, sizes)
        runs[name] = step_runner(
            make_step(tx), params, tx.init(params), x, y, steps=steps
        )
    times = time_alternating(runs, blocks)
    result = {}
    for name, (family, _) in table_variants.items():
        base = times[f"optax {family}"]
        result[name] = (
            1e3 * statistics.median(times[name]) / steps,
            paired_ratio(times[name], base),
        )
    return result, n_params(init_mlp(kp, sizes))


def report(label: str, result: dict, max_depth: int) -> str:
    header = ["depth"]
    for family in FAMILIES:
        header += [f"{family} ms", f"{family} ratio", f"{family} tied ratio"]
    rows = [
        ["optax"]
        + sum(([f"{result[f'optax {f}'][0]:.3f}", "1.000", ""] for f in FAMILIES), [])
    ]
    for d in range(1, max_depth + 1):
        row = [d]
        for f in FAMILIES:
            ms, ratio = result[f"{f} d={d}"]
            tied = result.get(f"{f} d={d} tied")
            row += [f"{ms:.3f}", f"{ratio:.3f}", f"{tied[1]:.3f}" if tied else "-"]
        rows.append(row)
    goals = ", ".join(
        f"{f} depth 3: {result[f'{f} d=3'][1]:.2f}x (goal {GOALS[f]:.2f}x)"
        for f in FAMILIES
        if f"{f} d=3" in result
    )
    for variant, what in [
        ("fused", "in the fused order (OneStep(fused=True))"),
        ("HoldCuts", "under ro.HoldCuts (given the loss)"),
        ("DistanceFloor", "under ro.DistanceFloor"),
    ]:
        ratios = ", ".join(
            f"{f} {result[f'{f} d=3 {variant}'][1]:.2f}x"
            for f in FAMILIES
            if f"{f} d=3 {variant}" in result
        )
        if ratios:
            goals += f"\nDepth 3 {what}: {ratios}"
    return f"{label}\n\n{table(header, rows)}\n\n{goals}\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, default=6)
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--large-blocks", type=int, default=10)
    parser.add_argument("--large-steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--models", default="paper,large")
    parser.add_argument("--png", default=next_to_me("overhead.png"))
    args = parser.parse_args()
    print(f"{machine()}; batch {args.batch}; median paired ratio to plain optax\n")
    plots = {}
    for model in args.models.split(","):
        sizes = {"paper": PAPER_MLP, "large": LARGE_MLP}[model]
        blocks, steps = (
            (args.blocks, args.steps)
            if model == "paper"
            else (args.large_blocks, args.large_steps)
        )
        result, count = measure(sizes, args.batch, args.depths, blocks, steps)
        label = (
            f"MLP {'-'.join(map(str, sizes))} ({count / 1e6:.2f}M parameters), "
            f"{blocks} blocks x {steps} steps"
        )
        print(report(label, result, args.depths), flush=True)
        plots[label] = result
    if args.png:
        plt = pyplot()
        fig, axes = plt.subplots(
            1, len(plots), figsize=(5.5 * len(plots), 4), squeeze=False
        )
        for ax, (label, result) in zip(axes[0], plots.items()):
            depths = range(1, args.depths + 1)
            for i, f in enumerate(FAMILIES):
                ax.plot(
                    depths,
                    [result[f"{f} d={d}"][1] for d in depths],
                    "o-",
                    color=f"C{i}",
                    label=f"{f} untied",
                )
                tied = [d for d in depths if d > 1]
                ax.plot(
                    tied,
                    [result[f"{f} d={d} tied"][1] for d in tied],
                    "s--",
                    color=f"C{i}",
                    label=f"{f} tied",
                )
                ax.axhline(GOALS[f], color=f"C{i}", lw=0.8, ls=":")
            ax.set(
                xlabel="depth", ylabel="time / plain optax", title=label.split(",")[0]
            )
            ax.legend(fontsize=8)
        save(fig, args.png)


if __name__ == "__main__":
    main()
