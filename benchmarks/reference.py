"""Side by side with the PyTorch package `gradient-descent-the-ultimate-optimizer`.

The reference paper's MLP (784-128-10, tanh), batch 256, the same initial weights
and the same synthetic batches in both. Stacks SGD^1..3 and Adam^1..3 with the
reference's parametrisation (identity learning rates, (tanh + 1) / 2 betas). Each
step is timed as a user would run it: ours is one jitted function per step, theirs
the package's loop (`begin`, `zero_grad`, `backward(create_graph=True)`, `step`).
Runs alternate block by block; the ratio is the median over rounds of our time /
theirs. The sanity columns compare the loss and the level-1 learning rate after
`--check-steps` steps (Adam differs slightly by design: the reference starts the
second moment at eps, we at 0 like optax).

Needs the `reference` extra: pip install -e ".[reference]" (torch==2.13.0, CPU).

    python benchmarks/reference.py [--blocks 20] [--steps 10] [--check-steps 100]
"""

import argparse
import os
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import machine, table

import recursive_opt as ro

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")

SIZES, BATCH = (784, 128, 10), 256
LR = {"SGD": 0.01, "Adam": 1e-3}
UPPER_LR = {"SGD": 1e-4, "Adam": 1e-5}


def data(n_batches: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_batches, BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=(n_batches, BATCH))
    w = {
        "w1": (rng.normal(size=(SIZES[1], SIZES[0])) / np.sqrt(SIZES[0])).astype(
            np.float32
        ),
        "b1": np.zeros(SIZES[1], np.float32),
        "w2": (rng.normal(size=(SIZES[2], SIZES[1])) / np.sqrt(SIZES[1])).astype(
            np.float32
        ),
        "b2": np.zeros(SIZES[2], np.float32),
    }
    return x, y, w


def ours(family: str, depth: int):
    ident = lambda v: ro.hyper(v, transform="identity")  # noqa: E731
    tanh01 = lambda v: ro.hyper(v, transform="tanh01")  # noqa: E731
    levels = []
    for k in range(depth):
        lr = LR[family] if k == 0 else UPPER_LR[family]
        if family == "SGD":
            levels.append(ro.SGD(ident(lr)))
        else:
            levels.append(ro.Adam(ident(lr), b1=tanh01(0.9), b2=tanh01(0.999)))
    return ro.Stack(*levels)


def theirs(gdtuo, family: str, depth: int):
    opt = gdtuo.NoOpOptimizer()
    for k in reversed(range(depth)):
        lr = LR[family] if k == 0 else UPPER_LR[family]
        if family == "SGD":
            opt = gdtuo.SGD(alpha=lr, optimizer=opt)
        else:
            opt = gdtuo.Adam(alpha=lr, beta1=0.9, beta2=0.999, optimizer=opt)
    return opt


def loss_fn(p, x, y):
    h = jnp.tanh(x @ p["w1"].T + p["b1"])
    logits = h @ p["w2"].T + p["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


class Ours:
    def __init__(self, tower, w):
        self.params = {k: jnp.asarray(v) for k, v in w.items()}
        self.state = tower.init(self.params)

        def step(params, state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, state = tower.update(grads, state, params)
            return ro.apply_updates(params, updates), state, loss

        self.step = jax.jit(step, donate_argnums=(0, 1))

    def run(self, x, y):
        loss = None
        for xb, yb in zip(x, y):
            self.params, self.state, loss = self.step(self.params, self.state, xb, yb)
        jax.block_until_ready(self.params)
        return float(loss)

    def lr(self):
        return float(ro.hyperparams(self.state)[0]["lr"])


class Theirs:
    def __init__(self, torch, gdtuo, opt, w):
        self.torch = torch
        model = torch.nn.Sequential(
            torch.nn.Linear(SIZES[0], SIZES[1]),
            torch.nn.Tanh(),
            torch.nn.Linear(SIZES[1], SIZES[2]),
        )
        with torch.no_grad():
            for layer, (wk, bk) in zip(
                [model[0], model[2]], [("w1", "b1"), ("w2", "b2")]
            ):
                layer.weight.copy_(torch.from_numpy(w[wk]))
                layer.bias.copy_(torch.from_numpy(w[bk]))
        self.opt = opt
        self.wrapped = gdtuo.ModuleWrapper(model, optimizer=opt)
        self.wrapped.initialize()

    def run(self, x, y):
        torch, loss = self.torch, None
        for xb, yb in zip(x, y):
            self.wrapped.begin()
            self.wrapped.zero_grad()
            out = self.wrapped.forward(torch.from_numpy(xb))
            loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(yb))
            loss.backward(create_graph=True)
            self.wrapped.step()
        return loss.item()

    def lr(self):
        return self.opt.parameters["alpha"].item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--check-steps", type=int, default=100)
    args = parser.parse_args()
    try:
        import torch
        from gradient_descent_the_ultimate_optimizer import gdtuo
    except ImportError:
        raise SystemExit('needs the reference extra: pip install -e ".[reference]"')
    torch.set_num_threads(os.cpu_count())
    x, y, w = data(max(args.steps, args.check_steps))
    rows = []
    for family in ("SGD", "Adam"):
        for depth in (1, 2, 3):
            a, b = (
                Ours(ours(family, depth), w),
                Theirs(torch, gdtuo, theirs(gdtuo, family, depth), w),
            )
            # Sanity: the same trajectory from the same start.
            # Batches as device arrays, as torch.from_numpy shares them without a copy.
            jx, jy = list(jnp.asarray(x)), list(jnp.asarray(y))
            loss_a = a.run(jx[: args.check_steps], jy[: args.check_steps])
            loss_b = b.run(x[: args.check_steps], y[: args.check_steps])
            lr_a, lr_b = a.lr(), b.lr()
            xs, ys = x[: args.steps], y[: args.steps]
            times_a, times_b = [], []
            for _ in range(args.blocks):
                start = time.perf_counter()
                a.run(jx[: args.steps], jy[: args.steps])
                times_a.append(time.perf_counter() - start)
                start = time.perf_counter()
                b.run(xs, ys)
                times_b.append(time.perf_counter() - start)
            ms_a = 1e3 * statistics.median(times_a) / args.steps
            ms_b = 1e3 * statistics.median(times_b) / args.steps
            ratio = statistics.median(t / u for t, u in zip(times_a, times_b))
            rows.append(
                [
                    f"{family}^{depth}",
                    f"{ms_a:.2f}",
                    f"{ms_b:.2f}",
                    f"{ratio:.3f}",
                    f"{loss_a:.5f} / {loss_b:.5f}",
                    f"{lr_a:.6g} / {lr_b:.6g}",
                ]
            )
            print(rows[-1], flush=True)
    print(
        f"\n{machine()}; torch {torch.__version__} with {torch.get_num_threads()} "
        f"threads; MLP 784-128-10, batch {BATCH}\n"
    )
    print(
        table(
            [
                "stack",
                "ours ms/step",
                "reference ms/step",
                "ours / reference",
                f"loss after {args.check_steps} steps (ours / ref)",
                "level-1 lr (ours / ref)",
            ],
            rows,
        )
    )
    print(
        "\nGoals on CPU: ours <= 1.0x the reference for SGD stacks, <= 0.5x for Adam."
    )


if __name__ == "__main__":
    main()
