"""Hypergradient schemes side by side: cost per step, final loss from any initial
lr, and the short-horizon bias on a noisy quadratic.

Schemes (each under the default levels, `Stack[d](opt, hypergradient=...)`):
`OneStep()` (the default), `RealTime(0.9)` and `RealTime(0.99)` (exact curvature,
driven by `tower.step`), `RealTime(0.9, curvature=False)` and `Unrolled(20)`.

1. Cost: ms per whole train step on the paper's MLP (784-128-10, batch 128) of
   `Stack[3](Adam(1e-3))` with each scheme, as a ratio to optax Adam measured in
   alternating blocks in the same process.
2. Quality: over 12 initial lrs from 1e-5 to 1, the final training loss of
   `Stack[3](Adam(lr))` with each scheme as a ratio to grid-searched Adam's best
   (median / worst; losses below 1e-4 count as solved), on the tasks of
   `tuning_free.py` (`--tasks`, default the four of `peers.py`) and on the
   sensitivity protocol (digits MLP 64-128-10, batch 128, 600 steps: the final
   loss itself).
3. Short-horizon bias (Wu et al. 2018): a noisy quadratic, 0.5 Σ hᵢ (θᵢ - cᵢ)² with
   hᵢ = 1/i (100 dimensions), cᵢ ~ N(0, 1/hᵢ) drawn afresh each step, θ₀ = 3,
   1000 steps of SGD whose lr a `Stack[2](SGD(lr0), warmup=100)` tunes from
   lr0 = 1e-3 and 0.3 (one warm-up for every scheme). Each scheme's final lr
   against the best fixed lr of a 36-point grid (the one with the lowest expected
   final loss), and the expected final losses.

    python benchmarks/schemes.py [--tasks digits,cancer,char,quadratic]
        [--blocks 7] [--png benchmarks/schemes.png]
"""

import argparse
import statistics

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import (
    init_mlp,
    machine,
    mlp_loss,
    next_to_me,
    paired_ratio,
    pyplot,
    save,
    table,
    time_alternating,
)
from peers import run_grid
from tuning_free import LRS, TASKS, digits_task, fmt, ratios

import recursive_opt as ro

SCHEMES = {
    "OneStep()": ro.OneStep(),
    "RealTime(0.9)": ro.RealTime(0.9),
    "RealTime(0.99)": ro.RealTime(0.99),
    "RealTime(0.9, curvature=False)": ro.RealTime(0.9, curvature=False),
    "Unrolled(20)": ro.Unrolled(20),
}


def cost(blocks: int, steps: int = 50) -> list[list]:
    kx, ky, kp = jr.split(jr.key(0), 3)
    x = jr.normal(kx, (128, 784))
    y = jr.randint(ky, (128,), 0, 10)

    def optax_step(params, state):
        loss, grads = jax.value_and_grad(mlp_loss)(params, x, y)
        updates, state = optax.adam(1e-3).update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    steps_fns = {"optax Adam": jax.jit(optax_step, donate_argnums=(0, 1))}
    inits = {"optax Adam": optax.adam(1e-3).init}
    for name, scheme in SCHEMES.items():
        tower = ro.Stack[3](ro.Adam(1e-3), hypergradient=scheme)
        step = lambda p, s, tower=tower: tower.step(mlp_loss, p, s, x, y)  # noqa: E731
        steps_fns[name] = jax.jit(step, donate_argnums=(0, 1))
        inits[name] = tower.init
    carries, runs = {}, {}
    for name, step in steps_fns.items():
        params = init_mlp(kp)
        carries[name] = step(params, inits[name](params))[:2]  # compile

        def run(name=name, step=step):
            params, state = carries[name]
            for _ in range(steps):
                params, state, _ = step(params, state)
            jax.block_until_ready(params)
            carries[name] = (params, state)

        runs[name] = run
    times = time_alternating(runs, blocks)
    base = times["optax Adam"]
    return [
        [
            name,
            f"{1e3 * statistics.median(t) / steps:.3f}",
            f"{paired_ratio(t, base):.2f}",
        ]
        for name, t in times.items()
    ]


def quality(keys: list[str], steps: int = 400) -> tuple[list[str], list[list]]:
    header, columns = ["scheme"], {name: [name] for name in SCHEMES}
    for key in keys:
        task = TASKS[key]()
        adam = run_grid(task, optax.adam, LRS, steps)[0]
        best = np.nanmin(np.where(np.isfinite(adam), adam, np.nan))
        header.append(task.name)
        for name, scheme in SCHEMES.items():
            make = lambda lr, s=scheme: ro.Stack[3](ro.Adam(lr), hypergradient=s)  # noqa: E731
            r = ratios(run_grid(task, make, LRS, steps)[0], best)
            columns[name].append(f"{fmt(np.median(r))} / {fmt(np.max(r))}")
        print(f"quality: {task.name} done", flush=True)
    header.append("sensitivity protocol (loss)")
    task = digits_task()
    for name, scheme in SCHEMES.items():
        make = lambda lr, s=scheme: ro.Stack[3](ro.Adam(lr), hypergradient=s)  # noqa: E731
        loss = run_grid(task, make, LRS, 600)[0]
        loss = np.where(np.isfinite(loss), loss, np.inf)
        columns[name].append(f"{np.median(loss):.2e} / {np.max(loss):.3g}")
    return header, list(columns.values())


DIM, T = 100, 1000
H = 1.0 / jnp.arange(1, DIM + 1)
SIGMA = jnp.sqrt(1.0 / H)


def _nq_loss(p, c):
    return 0.5 * jnp.sum(H * (p["w"] - c) ** 2)


def _expected(p):  # E over c of the loss, less the irreducible noise term
    return 0.5 * jnp.sum(H * p["w"] ** 2)


def noisy_quadratic():
    noise = jr.normal(jr.key(0), (T, DIM)) * SIGMA
    theta0 = {"w": jnp.full(DIM, 3.0)}

    def fixed(lr):
        def body(p, c):
            return jax.tree.map(
                lambda w, g: w - lr * g, p, jax.grad(_nq_loss)(p, c)
            ), None

        return _expected(jax.lax.scan(body, theta0, noise)[0])

    grid = np.logspace(-3, 0.5, 36)
    losses = np.asarray(jax.jit(jax.vmap(fixed))(jnp.asarray(grid)))
    losses = np.where(np.isfinite(losses), losses, np.inf)
    best_lr, best = grid[np.argmin(losses)], float(np.min(losses))

    def tuned(scheme, lr0):
        # One warm-up for every scheme (the default gives SGD with OneStep 300).
        tower = ro.Stack[2](ro.SGD(lr0), hypergradient=scheme, warmup=100)

        def body(carry, c):
            p, s = carry
            p, s, _ = tower.step(_nq_loss, p, s, c)
            # theta is one array: its learning rate (one per array by default).
            return (p, s), jax.tree.leaves(ro.hyperparams(s)[0]["lr"])[0]

        (p, _), lrs = jax.lax.scan(body, (theta0, tower.init(theta0)), noise)
        return _expected(p), lrs

    rows, trajectories = [], {}
    for name, scheme in SCHEMES.items():
        row = [name]
        for lr0 in (1e-3, 0.3):
            loss, lrs = jax.jit(lambda s=scheme, lr0=lr0: tuned(s, lr0))()
            lrs = np.asarray(lrs)
            trajectories[name, lr0] = lrs
            row += [f"{lrs[-1]:.3g} ({lrs[-1] / best_lr:.2f}x)", f"{float(loss):.3g}"]
        rows.append(row)
    header = [
        "scheme",
        "final lr from 1e-3 (/ best fixed)",
        "loss",
        "final lr from 0.3 (/ best fixed)",
        "loss",
    ]
    return best_lr, best, header, rows, trajectories


def plot(best_lr, trajectories, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = dict(zip(SCHEMES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (name, lr0), lrs in trajectories.items():
        ax.plot(
            lrs,
            color=colours[name],
            ls="-" if lr0 < 0.01 else "--",
            label=name if lr0 < 0.01 else None,
        )
    ax.axhline(best_lr, color="k", ls=":", label="best fixed lr")
    ax.set(
        yscale="log",
        xlabel="step",
        ylabel="level-1 lr",
        title="Noisy quadratic: lr from 1e-3 (solid) and 0.3 (dashed)",
    )
    ax.legend(fontsize=8)
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,cancer,char,quadratic")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--png", default=next_to_me("schemes.png"))
    args = parser.parse_args()
    print(machine() + "\n")
    best_lr, best, header, rows, trajectories = noisy_quadratic()
    print(
        f"Noisy quadratic ({T} steps): best fixed lr {best_lr:.3g}, its expected "
        f"final loss {best:.3g}\n\n{table(header, rows)}\n",
        flush=True,
    )
    plot(best_lr, trajectories, args.png)
    print("\nCost: whole train step, paper MLP 784-128-10, batch 128, Stack[3](Adam)\n")
    print(table(["scheme", "ms/step", "x optax Adam"], cost(args.blocks)) + "\n")
    header, rows = quality(args.tasks.split(","))
    print(
        "\nFinal train loss / tuned Adam's, Stack[3](Adam(lr)) over 12 initial lrs "
        "(median / worst); sensitivity protocol: the loss (median / worst)\n"
    )
    print(table(header, rows))


if __name__ == "__main__":
    main()
