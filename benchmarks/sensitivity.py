"""Are taller towers less sensitive to the initial learning rate? (The reference
paper's central claim.)

An MLP (64-128-10, tanh) on scikit-learn's digits (fixed 1437/360 split), batch
128. For each family (SGD, Adam) and height 1..4, one `ro.sweep` over `--num`
initial level-1 learning rates log-spaced from 1e-5 to 1; the upper levels start at
`--upper-lr` (on log-learning-rates, the default parametrisation). Per height: the
final training loss (whole training set) and test accuracy of every member, and
their spread (max - min) and median over the grid.

    python benchmarks/sensitivity.py [--steps 600] [--num 13] [--upper-lr 0.01]
        [--png benchmarks/sensitivity.png]
"""

import argparse

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import init_mlp, machine, mlp, next_to_me, pyplot, save, table

import recursive_opt as ro


def loss_fn(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(mlp(params, x), y).mean()


def metrics(params, both):
    (xt, yt), (xs, ys) = both
    return {
        "train_loss": loss_fn(params, (xt, yt)),
        "test_accuracy": jnp.mean(jnp.argmax(mlp(params, xs), -1) == ys),
    }


def tower(family: str, height: int, upper_lr: float):
    base = ro.SGD(0.01) if family == "SGD" else ro.Adam(1e-3)
    upper = ro.SGD(upper_lr) if family == "SGD" else ro.Adam(upper_lr)
    return ro.Stack(base, *([upper] * (height - 1)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--num", type=int, default=13)
    parser.add_argument("--heights", default="1,2,3,4")
    parser.add_argument("--upper-lr", type=float, default=0.01)
    parser.add_argument("--png", default=next_to_me("sensitivity.png"))
    args = parser.parse_args()
    data = ro.load_digits()
    params = init_mlp(jr.key(0), (64, 128, 10))
    lrs = np.logspace(-5, 0, args.num)
    heights = [int(h) for h in args.heights.split(",")]
    results = {}
    for family in ("SGD", "Adam"):
        for h in heights:
            res = ro.sweep(
                loss_fn,
                params,
                tower(family, h, args.upper_lr),
                data.train,
                steps=args.steps,
                batch_size=128,
                over={"lr": lrs},
                eval_data=(data.train, data.test),
                eval_fn=metrics,
                log_every=max(1, args.steps // 6),
                desc=f"{family} height {h}",
            )
            results[(family, h)] = (
                res.history["eval/train_loss"][:, -1],
                res.history["eval/test_accuracy"][:, -1],
                res.skipped,
            )
    print(
        f"\n{machine()}; digits MLP 64-128-10, {args.steps} steps, batch 128; "
        f"{args.num} initial lrs from 1e-5 to 1; upper levels start at lr "
        f"{args.upper_lr}\n"
    )
    rows = []
    for (family, h), (loss, acc, skipped) in results.items():
        rows.append(
            [
                f"{family}^{h}",
                f"{np.nanmax(loss) - np.nanmin(loss):.4f}",
                f"{np.nanmedian(loss):.4f}",
                f"{np.nanmin(loss):.4f}",
                f"{np.nanmax(acc) - np.nanmin(acc):.3f}",
                f"{np.nanmedian(acc):.3f}",
                int(np.sum(skipped > 0)),
            ]
        )
    print(
        table(
            [
                "stack",
                "train loss spread",
                "train loss median",
                "best train loss",
                "test acc spread",
                "test acc median",
                "members with skipped steps",
            ],
            rows,
        )
    )
    print("\nfinal train loss per initial lr:\n")
    header = ["initial lr"] + [f"{f}^{h}" for f, h in results]
    grid = [
        [f"{lr:.1e}"] + [f"{results[k][0][i]:.3f}" for k in results]
        for i, lr in enumerate(lrs)
    ]
    print(table(header, grid))
    if args.png:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, family in zip(axes, ("SGD", "Adam")):
            for h in heights:
                ax.plot(lrs, results[(family, h)][0], "o-", label=f"height {h}")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="initial level-1 lr",
                ylabel="final train loss",
                title=f"{family} towers on digits",
            )
            ax.legend()
        save(fig, args.png)


if __name__ == "__main__":
    main()
