"""Overhead of towers over plain optax, per jitted train step.

The reference paper's MNIST MLP (784-128-10, tanh), batch 256, synthetic inputs.
Each variant's whole train step (forward, backward, optimiser or tower update) is
one jitted function with donated buffers. Variants are timed in alternating blocks
in one process; the table reports the median ms/step over blocks and the median
over rounds of the ratio to the plain optax optimiser of the same family timed in
the same round (paired ratios are robust to the machine's load drifting).

    python benchmarks/overhead.py [--blocks 40] [--steps 20]
"""

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import recursive_opt as ro


def init_mlp(key, sizes=(784, 128, 10)):
    keys = jr.split(key, len(sizes) - 1)
    return [
        {"w": jr.normal(k, (a, b)) / jnp.sqrt(a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]


def loss_fn(params, x, y):
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    logits = x @ params[-1]["w"] + params[-1]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(tx):
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return jax.jit(step, donate_argnums=(0, 1))


VARIANTS = {
    "optax sgd(momentum=0.9)": ("sgd", optax.sgd(0.01, momentum=0.9)),
    "ro SGD(momentum=0.9)": ("sgd", ro.SGD(0.01, momentum=0.9).as_optax()),
    "Stack[2] SGD-m": ("sgd", ro.Stack[2](ro.SGD(0.01, momentum=0.9)).as_optax()),
    "Stack[3] SGD-m": ("sgd", ro.Stack[3](ro.SGD(0.01, momentum=0.9)).as_optax()),
    "Stack[3] SGD-m tied": (
        "sgd",
        ro.Stack[3](ro.SGD(0.01, momentum=0.9), tie=True).as_optax(),
    ),
    "optax adam": ("adam", optax.adam(1e-3)),
    "ro Adam": ("adam", ro.Adam(1e-3).as_optax()),
    "Stack[2] Adam": ("adam", ro.Stack[2](ro.Adam(1e-3)).as_optax()),
    "Stack[3] Adam": ("adam", ro.Stack[3](ro.Adam(1e-3)).as_optax()),
    "Stack[3] Adam tied": ("adam", ro.Stack[3](ro.Adam(1e-3), tie=True).as_optax()),
}
BASELINE = {"sgd": "optax sgd(momentum=0.9)", "adam": "optax adam"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    kx, ky, kp = jr.split(jr.key(0), 3)
    x = jr.normal(kx, (args.batch, 784))
    y = jr.randint(ky, (args.batch,), 0, 10)
    runs = {}
    for name, (_, tx) in VARIANTS.items():
        params = init_mlp(kp)
        step = make_step(tx)
        carry = step(params, tx.init(params), x, y)[:2]  # compile
        runs[name] = [step, carry]
    times = {name: [] for name in VARIANTS}
    for _ in range(args.blocks):
        for name, run in runs.items():
            step, (params, state) = run
            jax.block_until_ready(params)
            start = time.perf_counter()
            for _ in range(args.steps):
                params, state, _ = step(params, state, x, y)
            jax.block_until_ready(params)
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
            run[1] = (params, state)

    device = jax.devices()[0]
    print(
        f"\n{platform.processor() or platform.machine()}, {device.platform} "
        f"({device.device_kind}), jax {jax.__version__}; MLP 784-128-10 tanh, "
        f"batch {args.batch}; median of {args.blocks} blocks x {args.steps} steps\n"
    )
    print("| variant | ms/step | ratio to plain optax |")
    print("|---|---|---|")
    for name, (family, _) in VARIANTS.items():
        med = statistics.median(times[name])
        ratios = [t / b for t, b in zip(times[name], times[BASELINE[family]])]
        print(f"| {name} | {med:.3f} | {statistics.median(ratios):.3f} |")


if __name__ == "__main__":
    main()
