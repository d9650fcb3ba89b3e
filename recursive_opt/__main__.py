"""Quickstart: train a small MLP on sklearn's digits with plain Adam and with towers.

Run with `python -m recursive_opt [--steps N]`. Needs scikit-learn (the `demo`
extra) for the data set, which ships inside it.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import recursive_opt as ro


def load_digits():
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        sys.exit("The demo needs scikit-learn: pip install 'recursive_opt[demo]'")
    data = sk_load_digits()
    x = (data.data / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1437], order[1437:]
    return (x[train], data.target[train]), (x[test], data.target[test])


def init_mlp(key, sizes=(64, 128, 10)):
    params = []
    for k, (n_in, n_out) in zip(
        jr.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])
    ):
        w = jr.normal(k, (n_in, n_out), jnp.float32) / jnp.sqrt(n_in)
        params.append({"w": w, "b": jnp.zeros(n_out, jnp.float32)})
    return params


def mlp(params, x):
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(mlp(params, x), y).mean()


def train(tower, data, steps, batch_size=128, chunk=100, key=jr.key(0)):
    """Train with jitted `lax.scan` chunks; yields (step, loss, lrs) after each."""
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    params = init_mlp(key)
    state = tower.init(params)

    def body(carry, key):
        params, state = carry
        idx = jr.choice(key, len(x), (batch_size,), replace=False)
        loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
        updates, state = tower.update(grads, state, params)
        return (ro.apply_updates(params, updates), state), loss

    @jax.jit
    def run_chunk(params, state, key):
        (params, state), losses = jax.lax.scan(
            body, (params, state), jr.split(key, chunk)
        )
        return params, state, losses.mean()

    done = 0
    while done < steps:
        key, sub = jr.split(key)
        params, state, loss = run_chunk(params, state, sub)
        done += chunk
        yield done, float(loss), params, state


def lrs_of(state):
    if isinstance(state, ro.TowerState):
        return [float(h["lr"]) for h in ro.hyperparams(state)]
    return []


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m recursive_opt", description=__doc__
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps (x100)")
    args = parser.parse_args(argv)
    steps = max(100, (args.steps // 100) * 100)
    train_data, (x_test, y_test) = load_digits()
    runs = {
        "Adam(1e-3)": ro.Adam(1e-3),
        "Stack[3](Adam(1e-3))": ro.Stack[3](ro.Adam(1e-3)),
        "Stack[3](Adam(1e-3), tie=True)": ro.Stack[3](ro.Adam(1e-3), tie=True),
    }
    print(
        f"digits: {len(train_data[0])} train / {len(x_test)} test, MLP 64-128-10, "
        f"batch 128, {steps} steps\n"
    )
    summary = []
    for name, tower in runs.items():
        print(name)
        start = time.perf_counter()
        for step, loss, params, state in train(tower, train_data, steps):
            lrs = ", ".join(f"{lr:.2e}" for lr in lrs_of(state))
            print(
                f"  step {step:5d}  mean batch loss {loss:.4f}"
                + (f"  lr by level: {lrs}" if lrs else "")
            )
        seconds = time.perf_counter() - start
        train_loss = float(loss_fn(params, *train_data))
        acc = float(jnp.mean(jnp.argmax(mlp(params, x_test), -1) == y_test))
        summary.append((name, train_loss, acc, seconds))
    print("\n| optimiser | train loss (all) | test accuracy | seconds (w/ compile) |")
    print("|---|---|---|---|")
    for name, loss, acc, seconds in summary:
        print(f"| {name} | {loss:.4f} | {acc:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
