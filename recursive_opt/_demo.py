"""What `recursive-opt demo` and `recursive-opt sweep` run: an MLP on digits."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._data import load_digits
from ._fit import fit
from ._loop import mean_lr
from ._optimisers.adam import Adam
from ._optimisers.sgd import SGD
from ._stack import Stack
from ._sweep import sweep

BATCH = 128


def make_mlp(seed: int = 0, sizes=(64, 128, 10)):
    """A Flax NNX MLP with tanh hidden layers."""
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            layers = [
                nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])
            ]
            # Flax 0.12 holds a list of modules in `nnx.List`; before it, in a list.
            self.layers = getattr(nnx, "List", list)(layers)

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jnp.tanh(layer(x))
            return self.layers[-1](x)

    return MLP(nnx.Rngs(seed))


def loss_fn(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def metrics(model, batch):
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def _runs(lrs, depth: int) -> dict:
    runs = {}
    for lr in lrs:
        runs[f"Adam({lr:g})"] = Adam(lr)
        runs[f"Stack[{depth}](Adam({lr:g}))"] = Stack[depth](Adam(lr))
    return runs


def demo(steps: int, lrs, out: str, depth: int = 3, progress: bool = True) -> dict:
    """Train plain Adam and the default tower from each initial lr, print the table,
    write `out/demo.png`; returns the `FitResult`s by name."""
    data = load_digits()
    print(
        f"digits: {len(data.train[0])} train / {len(data.test[0])} test images; "
        f"MLP 64-128-10 (Flax NNX); batch {BATCH}; {steps} steps; plain Adam and "
        f"the default Stack[{depth}] from initial lrs "
        + ", ".join(f"{lr:g}" for lr in lrs)
        + "\n"
    )
    results = {}
    log_every = max(1, min(20, steps // 10))
    for name, tower in _runs(lrs, depth).items():
        results[name] = fit(
            loss_fn,
            make_mlp(0),
            tower,
            data.train,
            steps=steps,
            batch_size=BATCH,
            log_every=log_every,
            eval_data=data.test,
            eval_fn=metrics,
            progress=progress,
            desc=name,
        )
    evaluate = jax.jit(metrics)
    rows = []
    for name, res in results.items():
        train = evaluate(res.params, data.train)
        keys = [k for k in res.history if k.startswith("level")]
        levels = sorted({int(k[5:].split("/")[0]) for k in keys})
        lrs_now = [mean_lr(res.history, k)[-1] for k in levels]
        rows.append(
            f"| {name} | {float(train['loss']):.4f} | "
            f"{float(res.history['eval/accuracy'][-1]):.3f} | "
            + ", ".join(f"{float(v):.2e}" for v in lrs_now)
            + f" | {res.ms_per_step:.2f} |"
        )
    print(
        "\n| optimiser | final train loss | test accuracy | final lr by level "
        "(bottom first) | ms/step |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    path = os.path.join(out, "demo.png")
    _plot_demo(results, lrs, path)
    print(f"\nwrote {path}")
    return results


def _plot_demo(results: dict, lrs, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, res in results.items():
        h = res.history
        tower = name.startswith("Stack")
        colour = f"C{[f'({lr:g})' in name for lr in lrs].index(True)}"
        style = dict(
            color=colour, linestyle="-" if tower else "--", lw=1.6 if tower else 1
        )
        ax_loss.plot(h["step"], h["loss"], label=name, **style)
        ax_lr.plot(h["step"], mean_lr(h), label=name, **style)
    ax_loss.set(
        xlabel="step",
        ylabel="mean batch loss",
        yscale="log",
        title="Training loss on digits (solid: tower, dashed: Adam)",
    )
    ax_lr.set(
        xlabel="step",
        ylabel="level-1 lr (towers: geometric mean over arrays)",
        yscale="log",
        title="Level-1 learning rate",
    )
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lr_sweep(args, progress: bool = True) -> dict:
    """`recursive-opt sweep`: final loss vs initial lr, one `ro.sweep` per height."""
    data = load_digits()
    lrs = np.logspace(np.log10(args.lr_min), np.log10(args.lr_max), args.num)
    # Built at the largest start: a default tower bounds Adam's lr by 1 or its
    # start, whichever is higher (members start from `over`).
    base = Adam(float(lrs.max())) if args.optimiser == "adam" else SGD(1e-2)
    finals = {}
    for height in args.heights:
        tower = Stack[height](base, tie=args.tie)
        res = sweep(
            loss_fn,
            make_mlp(0),
            tower,
            data.train,
            steps=args.steps,
            batch_size=BATCH,
            over={"lr": lrs},
            log_every=max(1, min(100, args.steps)),
            progress=progress,
            desc=f"height {height}",
        )
        finals[height] = res.final_loss
    name = "Adam" if args.optimiser == "adam" else "SGD"
    head = [
        f"Stack[{h}]({name}{', tied' if args.tie and h > 1 else ''})" for h in finals
    ]
    lines = [
        "| initial lr | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    for i, lr in enumerate(lrs):
        lines.append(
            f"| {lr:.2e} | " + " | ".join(f"{finals[h][i]:.4f}" for h in finals) + " |"
        )
    for label, fn in (("spread (max - min)", np.ptp), ("median", np.median)):
        lines.append(
            f"| {label} | " + " | ".join(f"{fn(finals[h]):.4f}" for h in finals) + " |"
        )
    table = "\n".join(lines)
    print(
        f"\nfinal mean batch loss after {args.steps} steps "
        f"(digits MLP, batch {BATCH})\n"
    )
    print(table)
    with open(os.path.join(args.out, "sweep.md"), "w") as f:
        f.write(table + "\n")
    path = os.path.join(args.out, "sweep.png")
    _plot_sweep(lrs, finals, head, path)
    print(f"\nwrote {path} and {os.path.join(args.out, 'sweep.md')}")
    return finals


def _plot_sweep(lrs, finals: dict, labels: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, final in zip(labels, finals.values()):
        ax.plot(lrs, final, "o-", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="initial learning rate of level 1",
        ylabel="final mean batch loss",
        title="Sensitivity to the initial lr",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
