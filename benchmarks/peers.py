"""What a user would pick instead of a tower: tuned Adam, hypergradient descent and
learning-rate-free optimisers, over a grid of initial learning rates.

Tasks: an MLP on scikit-learn's digits; logistic regression on its breast-cancer
data; a character-level MLP language model on Python's own standard-library
source; least squares on 10-D quadratics (condition number 100). Every optimiser
runs the whole grid as one vmapped, jitted program (each member a separate run
from the same initial weights and batches, drawn uniformly with replacement); a
step whose loss or update is not finite is skipped, as `ro.fit` does. Per task
and optimiser: the median, worst and best final training loss (whole training
set) over the grid, and the median test metric. "Adam, tuned" is the best grid
point of plain Adam, i.e. what a grid search buys with |grid| runs.

The learning-rate-free optimisers take the grid value as their `learning_rate`
(a multiplier, 1 by default); towers take it as level 1's initial lr, and their
upper levels are Adam at `--upper-lr` tuning every hyperparameter of the level
below (explicit levels, not the tuning-free defaults of `Stack[d]`: see
`tuning_free.py` for those).

    python benchmarks/peers.py [--steps 400] [--num 9] [--png benchmarks/peers.png]
"""

import argparse
import dataclasses
import os
import sysconfig
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import init_mlp, machine, mlp, next_to_me, pyplot, save, table

import recursive_opt as ro


@dataclasses.dataclass
class Task:
    name: str
    train: tuple
    test: tuple
    params: object
    loss: Callable  # loss(params, (x, y))
    metric: Callable  # metric(params, (x, y)) on the test set
    metric_name: str
    batch: int


def _ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _accuracy(predict):
    return lambda p, b: jnp.mean(jnp.argmax(predict(p, b[0]), -1) == b[1])


def digits_task():
    d = ro.load_digits()
    loss = lambda p, b: _ce(mlp(p, b[0]), b[1])  # noqa: E731
    return Task(
        "digits MLP",
        d.train,
        d.test,
        init_mlp(jr.key(0), (64, 128, 10)),
        loss,
        _accuracy(mlp),
        "test accuracy",
        128,
    )


def binary_logits(p, x):
    """Logistic regression's two-class logits (class 0's fixed at zero)."""
    z = x @ p["w"] + p["b"]
    return jnp.stack([jnp.zeros_like(z), z], -1)


def standardised_split(data, n_train: int):
    """A scikit-learn dataset as (train, test) pairs `(x, y)`: a fixed random split,
    inputs standardised with the training set's statistics."""
    x, y = data.data.astype(np.float32), data.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:n_train], order[n_train:]
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-8)
    return (x[train], y[train]), (x[test], y[test])


def breast_cancer_task():
    from sklearn.datasets import load_breast_cancer

    train, test = standardised_split(load_breast_cancer(), 455)
    params = {"w": jnp.zeros(30), "b": jnp.zeros([])}
    return Task(
        "breast-cancer logistic",
        train,
        test,
        params,
        lambda p, b: _ce(binary_logits(p, b[0]), b[1]),
        _accuracy(binary_logits),
        "test accuracy",
        64,
    )


def char_windows(names, context: int, max_chars: int, stride: int = 1):
    """Next-character windows of Python's own standard-library files `names`:
    the vocabulary size and 90/10 train/test splits of (context, next char)."""
    src = sysconfig.get_paths()["stdlib"]
    text = ""
    for name in names:
        with open(os.path.join(src, name), encoding="utf-8") as f:
            text += f.read()
    text = text[:max_chars]
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text], np.int32)
    windows = np.lib.stride_tricks.sliding_window_view(ids, context + 1)[::stride]
    x, y = windows[:, :-1], windows[:, -1]
    split = int(0.9 * len(x))
    return len(vocab), (x[:split], y[:split]), (x[split:], y[split:])


def next_char_task(name: str, data: tuple, params, logits, batch: int) -> Task:
    """A next-character task: cross-entropy of `logits(params, x)`, also the
    test metric. `data`: (train, test)."""
    loss = lambda p, b: _ce(logits(p, b[0]), b[1])  # noqa: E731
    return Task(name, *data, params, loss, loss, "test loss (nats/char)", batch)


def char_task(context: int = 8, max_chars: int = 200_000):
    files = ("argparse.py", "textwrap.py", "string.py", "shutil.py", "inspect.py")
    n, *data = char_windows(files, context, max_chars)
    k1, k2 = jr.split(jr.key(0))
    params = {
        "embed": jr.normal(k1, (n, 16)) * 0.1,
        "mlp": init_mlp(k2, (context * 16, 256, n)),
    }

    def logits(p, x):
        return mlp(p["mlp"], p["embed"][x].reshape(x.shape[0], -1))

    return next_char_task(f"char MLP ({n} symbols)", data, params, logits, 128)


def quadratic_task():
    d = ro.make_quadratic(dim=10, n=1024, condition=100.0, noise=0.1, seed=0)
    loss = lambda p, b: jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)  # noqa: E731
    return Task(
        "10-D quadratic",
        d.train,
        d.test,
        {"w": jnp.zeros(10), "b": jnp.zeros([])},
        loss,
        loss,
        "test MSE",
        128,
    )


def optimisers(upper_lr: float) -> dict[str, Callable]:
    ident = lambda v: ro.hyper(v, transform="identity")  # noqa: E731
    c = optax.contrib
    return {
        "Adam": lambda lr: optax.adam(lr),
        "SGD-HD (Baydin)": lambda lr: ro.Stack(
            ro.SGD(ident(lr)), ro.SGD(ident(1e-3))
        ).as_optax(),
        "Adam-HD (Baydin)": lambda lr: ro.Stack(
            ro.Adam(ident(lr), b1=ro.fixed(0.9), b2=ro.fixed(0.999)),
            ro.SGD(ident(1e-7)),
        ).as_optax(),
        "Adam + 1 upper Adam": lambda lr: ro.Stack(
            ro.Adam(lr), ro.Adam(upper_lr)
        ).as_optax(),
        "Adam + 2 upper Adams": lambda lr: ro.Stack(
            ro.Adam(lr), ro.Adam(upper_lr), ro.Adam(upper_lr)
        ).as_optax(),
        "Adam Stack[2] tied": lambda lr: ro.Stack[2](ro.Adam(lr), tie=True).as_optax(),
        "Adam Stack[3] tied": lambda lr: ro.Stack[3](ro.Adam(lr), tie=True).as_optax(),
        "prodigy": lambda lr: c.prodigy(learning_rate=lr),
        "dadapt_adamw": lambda lr: c.dadapt_adamw(learning_rate=lr),
        "dog": lambda lr: c.dog(learning_rate=lr),
        "mechanize(adam)": lambda lr: c.mechanize(optax.adam(lr)),
        "schedule_free_adamw": lambda lr: c.schedule_free_adamw(learning_rate=lr),
    }


def losses_and_metrics(task: Task, train: Callable, lrs, with_aux: bool = False):
    """Final train loss (whole training set) and test metric of `train(lr)`, the
    final parameters of one run, at every lr: one jitted program, vmapped. With
    `with_aux`, `train(lr)` returns `(params, aux)` and `aux` at every lr comes
    third."""
    data = tuple(jnp.asarray(a) for a in task.train)
    test = tuple(jnp.asarray(a) for a in task.test)

    def one(lr):
        params, aux = train(lr) if with_aux else (train(lr), None)
        return task.loss(params, data), task.metric(params, test), aux

    loss, metric, aux = jax.jit(jax.vmap(one))(jnp.asarray(lrs))
    if with_aux:
        return np.asarray(loss), np.asarray(metric), np.asarray(aux)
    return np.asarray(loss), np.asarray(metric)


def kept_if_finite(loss, updates, new, old):
    """`new` where the loss and every update are finite, else `old`: a step that
    overflowed is skipped, so a run ends at its last finite state."""
    ok = jnp.isfinite(loss) & jnp.all(
        jnp.array([jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(updates)])
    )
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def run_grid(task: Task, make_tx: Callable, lrs, steps: int, seed: int = 1):
    """Final train loss and test metric of one optimiser at every grid point.

    `make_tx(lr)` gives an optax transformation or a tower (driven by
    `step_with`, which serves every hypergradient scheme). `seed` draws the
    batches (the same for every method and grid point)."""
    x, y = (jnp.asarray(a) for a in task.train)
    n = len(x)
    keys = jr.split(jr.key(seed), steps)

    def one(lr):
        tx = make_tx(lr)
        params = task.params

        def body(carry, key):
            params, state = carry
            idx = jr.randint(key, (task.batch,), 0, n)  # with replacement: cheap
            batch = (x[idx], y[idx])
            if isinstance(tx, ro.Stack):  # its scheme may need the loss itself

                def grads_and_loss(p):
                    loss, grads = jax.value_and_grad(task.loss)(p, batch)
                    return grads, loss

                updates, new_state, loss = tx.step_with(grads_and_loss, params, state)
            else:
                loss, grads = jax.value_and_grad(task.loss)(params, batch)
                if isinstance(tx, ro.HoldCuts):  # it reads the batch loss
                    updates, new_state = tx.update(grads, state, params, value=loss)
                else:
                    updates, new_state = tx.update(grads, state, params)
            new = (optax.apply_updates(params, updates), new_state)
            return kept_if_finite(loss, updates, new, carry), None

        (params, state), _ = jax.lax.scan(body, (params, tx.init(params)), keys)
        if hasattr(optax.contrib, "schedule_free_eval_params") and isinstance(
            state, optax.contrib.ScheduleFreeState
        ):
            params = optax.contrib.schedule_free_eval_params(state, params)
        return params

    return losses_and_metrics(task, one, lrs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--num", type=int, default=9)
    parser.add_argument("--lr-min", type=float, default=1e-4)
    parser.add_argument("--lr-max", type=float, default=1.0)
    parser.add_argument("--upper-lr", type=float, default=0.01)
    parser.add_argument("--tasks", default="digits,cancer,char,quadratic")
    parser.add_argument("--png", default=next_to_me("peers.png"))
    args = parser.parse_args()
    makers = {
        "digits": digits_task,
        "cancer": breast_cancer_task,
        "char": char_task,
        "quadratic": quadratic_task,
    }
    lrs = np.logspace(np.log10(args.lr_min), np.log10(args.lr_max), args.num)
    opts = optimisers(args.upper_lr)
    results = {}
    for key in args.tasks.split(","):
        task = makers[key]()
        for name, make in opts.items():
            results[(task.name, name)] = run_grid(task, make, lrs, args.steps)
            loss = results[(task.name, name)][0]
            print(
                f"{task.name:28s} {name:22s} median loss {np.nanmedian(loss):.4f}",
                flush=True,
            )
        results[(task.name, "metric")] = task.metric_name
    print(
        f"\n{machine()}; {args.steps} steps; {args.num} initial lrs from "
        f"{args.lr_min:g} to {args.lr_max:g}; tower upper levels start at "
        f"{args.upper_lr:g}\n"
    )
    tasks = list(dict.fromkeys(t for t, _ in results))
    for t in tasks:
        rows = []
        for name in opts:
            loss, metric = results[(t, name)]
            bad = np.where(np.isfinite(loss), loss, np.inf)
            rows.append(
                [
                    name,
                    f"{np.median(bad):.4f}",
                    f"{np.max(bad):.4f}",
                    f"{np.min(bad):.4f}",
                    f"{np.nanmedian(metric):.4f}",
                ]
            )
            if name == "Adam":
                best = int(np.argmin(bad))
                rows.append(
                    [
                        "Adam, tuned (best of grid)",
                        f"{bad[best]:.4f}",
                        f"{bad[best]:.4f}",
                        f"{bad[best]:.4f}",
                        f"{metric[best]:.4f} (lr {lrs[best]:.1e})",
                    ]
                )
        print(f"**{t}** (metric: {results[(t, 'metric')]})\n")
        print(
            table(
                ["optimiser", "median final loss", "worst", "best", "median metric"],
                rows,
            )
            + "\n"
        )
    if args.png:
        plt = pyplot()
        fig, axes = plt.subplots(
            1, len(tasks), figsize=(4.6 * len(tasks), 4.2), squeeze=False
        )
        for ax, t in zip(axes[0], tasks):
            for i, name in enumerate(opts):
                tower = any(w in name for w in ("upper", "Stack", "HD"))
                style = "o-" if tower else "x--"
                ax.plot(
                    lrs,
                    results[(t, name)][0],
                    style,
                    color=f"C{i % 10}",
                    label=name,
                    ms=3,
                    lw=1,
                )
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="initial lr / lr multiplier",
                ylabel="final train loss",
                title=t,
            )
        axes[0][0].legend(fontsize=6)
        save(fig, args.png)


if __name__ == "__main__":
    main()
