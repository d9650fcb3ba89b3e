"""A tower's cost where it matters most, on an accelerator: the update alone on a
large model, a transformer language model's whole step, and population throughput.

- `update`: only the optimiser update, applied to the parameters (fixed
  gradients, parameters and state donated) on an MLP 1024-4096-4096-4096-1000
  (42M parameters), for optax and depth-3 towers of
  SGD with momentum and Adam, in the reference's order and fused
  (`OneStep(fused=True)`), with lr alone tuned (the default) or Adam's betas too,
  and with bfloat16 records. Time per update, ratio to optax's update in the
  same round, and the compiled update's bytes (XLA's cost analysis) in P, the
  parameters' float32 size.
- `transformer`: whole jitted train steps of a byte-level transformer language
  model (6 layers, width 512, sequence 256, batch 32, bfloat16 activations,
  float32 parameters, output tied to the embedding; 19.1M parameters), optax
  Adam against depth-3 Adam towers (and the default tower with its upper
  levels stepping one by one, as before 2026-12-07).
- `population`: `Stack[2](Adam)` on a digits-sized MLP (64-128-10, batch 128),
  vmapped over N members (one jitted program): member-steps per second, with
  the upper levels stepping the values below as vectors (the default) and one
  by one (as before 2026-12-07; compiled for a GPU, the vectors add ten
  kernels to this step).

On a GPU the update is memory-bound: its time follows its bytes. On a CPU the
figures only check that the script runs (`--small` shrinks every model).
`--target benchmarks/h200.txtpb` compiles the update and the transformer's step
for a GPU without one (see bytes.py) and prints their bytes alone, no times:
what a card's compiler makes of these programs, before a card is lent.

    python benchmarks/accelerator.py [--parts update,transformer,population]
        [--blocks 10] [--small] [--target CONFIG]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from _common import (
    applied_update,
    compiled_bytes,
    compiled_cost,
    gpu_target,
    init_mlp,
    machine,
    make_step,
    mlp_loss,
    n_params,
    paired_ratio,
    step_runner,
    table,
    time_alternating,
    upper_levels,
)

import recursive_opt as ro

TARGET = None  # `--target`: a compile-only GPU; bytes only, no times


def _scheme(**options) -> ro.OneStep:
    # Compiled for a GPU from this machine, the towers take the layout a GPU's
    # default picks (made here, the default would pick the CPU's).
    layout = "separate" if TARGET is not None else None
    return ro.OneStep(record_layout=layout, **options)


def _towers(family: str) -> dict:
    """`label -> optax transformation` for one family, optax's first."""
    if family == "SGD-m":
        level1, betas = ro.SGD(0.01, momentum=0.9), None
        out = {"optax": optax.sgd(0.01, momentum=0.9)}
    else:
        level1 = ro.Adam(1e-3)
        betas = ro.Adam(1e-3, b1=ro.hyper(0.9), b2=ro.hyper(0.999))
        out = {"optax": optax.adam(1e-3)}

    def tower(opt, **scheme):
        return ro.Stack[3](opt, hypergradient=_scheme(**scheme)).as_optax()

    out["depth 3, lr"] = tower(level1)
    out["depth 3, lr, fused"] = tower(level1, fused=True)
    if betas is not None:
        bf16 = dict(record_dtype=jnp.bfloat16)
        out["depth 3, lr, b1, b2"] = tower(betas)
        out["depth 3, lr, b1, b2, bf16 record"] = tower(betas, **bf16)
        out["depth 3, lr, b1, b2, fused"] = tower(betas, fused=True)
        both = dict(fused=True, **bf16)
        out["depth 3, lr, b1, b2, bf16 record, fused"] = tower(betas, **both)
    return out


def update_only(sizes, blocks: int, steps: int) -> str:
    params = init_mlp(jr.key(0), sizes)
    grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
    p_bytes = 4 * n_params(params)
    rows = []
    for family in ("SGD-m", "Adam"):
        runs, carries, moved = {}, {}, {}
        for label, tx in _towers(family).items():
            update = applied_update(tx.update)
            state = tx.init(params)
            args = (params, state, grads)
            moved[label] = compiled_bytes(update, *args, device=TARGET) / p_bytes
            if TARGET is not None:
                continue
            copy = jax.tree.map(jnp.copy, params)  # donated: one per run
            carries[label] = update(copy, state, grads)  # compile

            def run(label=label, update=update):
                carry = carries[label]
                for _ in range(steps):
                    carry = update(*carry, grads)
                jax.block_until_ready(carry)
                carries[label] = carry

            runs[label] = run
        if TARGET is not None:
            for label, p in moved.items():
                rows.append(
                    [family, label, "", "", f"{p:.1f} ({p / moved['optax']:.2f}x)"]
                )
            continue
        times = time_alternating(runs, blocks)
        for label in runs:
            ms = 1e3 * statistics.median(times[label]) / steps
            ratio = paired_ratio(times[label], times["optax"])
            by = moved[label] / moved["optax"]
            rows.append(
                [
                    family,
                    label,
                    f"{ms:.3f}",
                    f"{ratio:.2f}",
                    f"{moved[label]:.1f} ({by:.2f}x)",
                ]
            )
    header = ["family", "update", "ms", "x optax time", "P (x optax bytes)"]
    size = f"{n_params(params) / 1e6:.1f}M"
    label = f"Update only, MLP {'-'.join(map(str, sizes))} ({size})"
    return f"{label}, {blocks} blocks x {steps} updates\n\n{table(header, rows)}\n"


# --- A byte-level transformer language model (pre-norm, learned positions).


def init_lm(key, layers: int, width: int, seq: int, vocab: int = 256):
    def dense(k, a, b):
        return jr.normal(k, (a, b)) / jnp.sqrt(a)

    keys = jr.split(key, 2 + 4 * layers)
    params = {
        "embed": 0.02 * jr.normal(keys[0], (vocab, width)),
        "pos": 0.02 * jr.normal(keys[1], (seq, width)),
        "blocks": [],
        "norm": jnp.ones(width),
    }
    for i in range(layers):
        k = keys[2 + 4 * i : 6 + 4 * i]
        params["blocks"].append(
            {
                "norm1": jnp.ones(width),
                "qkv": dense(k[0], width, 3 * width),
                "out": dense(k[1], width, width),
                "norm2": jnp.ones(width),
                "up": dense(k[2], width, 4 * width),
                "down": dense(k[3], 4 * width, width),
            }
        )
    return params


def _rms(x, scale):
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + 1e-6)
    return (x32 * scale).astype(x.dtype)


def lm_loss(params, tokens, heads: int = 8):
    """Next-byte cross-entropy; activations in bfloat16, parameters float32."""
    bf = jnp.bfloat16
    x, y = tokens[:, :-1], tokens[:, 1:]
    b, n = x.shape
    h = (params["embed"][x] + params["pos"][:n]).astype(bf)
    mask = jnp.tril(jnp.ones((n, n), bool))
    for blk in params["blocks"]:
        z = _rms(h, blk["norm1"])
        q, k, v = jnp.split(z @ blk["qkv"].astype(bf), 3, axis=-1)
        q, k, v = (a.reshape(b, n, heads, -1) for a in (q, k, v))
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(bf)
        att = jax.nn.softmax(jnp.where(mask, att, -1e4).astype(jnp.float32), -1)
        z = jnp.einsum("bhqk,bkhd->bqhd", att.astype(bf), v).reshape(b, n, -1)
        h = h + z @ blk["out"].astype(bf)
        z = _rms(h, blk["norm2"])
        h = h + jax.nn.gelu(z @ blk["up"].astype(bf)) @ blk["down"].astype(bf)
    logits = _rms(h, params["norm"]) @ params["embed"].T.astype(bf)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), y
    ).mean()


# The default tower with its upper levels stepping level 1's values one by one
# (`_flat`'s leaf-by-leaf path, as before 2026-12-07): compiled for a GPU the
# vectors took the transformer's extra kernels from +56 to +29 and added ten to
# the population's small step (benchmarks/README.md); a card says which wins.
ONE_BY_ONE = "Stack[3](Adam), upper levels one by one"


def transformer(layers, width, seq, batch, blocks: int, steps: int) -> str:
    params = init_lm(jr.key(0), layers, width, seq)
    tokens = jr.randint(jr.key(1), (batch, seq + 1), 0, 256)
    variants = {
        "optax Adam": optax.adam(1e-3),
        "Stack[3](Adam) (lr per layer)": ro.Stack[3](ro.Adam(1e-3)).as_optax(),
        "Stack[3](Adam), fused": ro.Stack[3](
            ro.Adam(1e-3), hypergradient=_scheme(fused=True)
        ).as_optax(),
        "Stack[3](Adam), lr, b1, b2": ro.Stack[3](
            ro.Adam(1e-3, b1=ro.hyper(0.9), b2=ro.hyper(0.999)),
            hypergradient=_scheme(),
        ).as_optax(),
        ONE_BY_ONE: ro.Stack[3](ro.Adam(1e-3)).as_optax(),
    }
    head = (
        f"Transformer LM, {layers} layers, width {width}, sequence {seq}, batch "
        f"{batch} ({n_params(params) / 1e6:.1f}M parameters), whole step"
    )
    if TARGET is not None:  # the whole step's bytes, in the parameters' P
        p_bytes = 4 * n_params(params)
        moved, kernels = {}, {}
        for label, tx in variants.items():
            step = make_step(tx, loss=lambda p, x, _: lm_loss(p, x))
            with upper_levels(vectors=label != ONE_BY_ONE):
                args = (params, tx.init(params), tokens, None)
                moved[label], kernels[label] = compiled_cost(step, *args, device=TARGET)
        rows = [
            [
                label,
                f"{p / p_bytes:.1f} ({p / moved['optax Adam']:.3f}x)",
                f"{kernels[label]} (+{kernels[label] - kernels['optax Adam']})",
            ]
            for label, p in moved.items()
        ]
        header = ["step", "P (x optax Adam)", "kernels (+ optax Adam's)"]
        return f"{head}, compiled\n\n{table(header, rows)}\n"
    runs = {}
    for label, tx in variants.items():
        step = make_step(tx, loss=lambda p, x, _: lm_loss(p, x))
        p = jax.tree.map(jnp.copy, params)
        with upper_levels(vectors=label != ONE_BY_ONE):  # traced in here
            runs[label] = step_runner(step, p, tx.init(p), tokens, None, steps=steps)
    times = time_alternating(runs, blocks)
    rows = [
        [
            label,
            f"{1e3 * statistics.median(times[label]) / steps:.2f}",
            f"{paired_ratio(times[label], times['optax Adam']):.3f}",
        ]
        for label in runs
    ]
    head = f"{head}, {blocks} blocks x {steps} steps"
    return f"{head}\n\n{table(['step', 'ms', 'x optax Adam'], rows)}\n"


def population(members: list[int], steps: int) -> str:
    params = init_mlp(jr.key(0), (64, 128, 10))
    x = jr.normal(jr.key(1), (128, 64))
    y = jr.randint(jr.key(2), (128,), 0, 10)

    def train(lr):  # `steps` steps of one member from its initial lr
        tx = ro.Stack[2](ro.Adam(lr)).as_optax()

        def body(carry, _):
            p, s = carry
            grads = jax.grad(mlp_loss)(p, x, y)
            u, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, steps)
        return mlp_loss(p, x, y)

    def throughput(n: int, vectors: bool) -> float:
        run = jax.jit(jax.vmap(train))
        lrs = jnp.logspace(-4, 0, n)
        with upper_levels(vectors):
            jax.block_until_ready(run(lrs))  # compile
        start = time.perf_counter()
        jax.block_until_ready(run(lrs))
        return n * steps / (time.perf_counter() - start)

    rows = []
    for n in members:
        vectors, one_by_one = throughput(n, True), throughput(n, False)
        rows.append([n, f"{vectors:.3g}", f"{one_by_one:.3g}"])
    head = f"Population: Stack[2](Adam), MLP 64-128-10, batch 128, {steps} steps"
    cols = ["members", "member-steps / s", "upper levels one by one: member-steps / s"]
    return f"{head}\n\n{table(cols, rows)}\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="update,transformer,population")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="tiny models (CPU)")
    parser.add_argument(
        "--target",
        help="an XLA GPU target config to compile for without a GPU (bytes only; "
        "needs jax's CUDA plugin; the population part is skipped)",
    )
    args = parser.parse_args()
    global TARGET
    TARGET = gpu_target(args.target) if args.target else None
    print(machine(), "\n")
    if TARGET is not None:
        print(f"compiled for {TARGET.device_kind} ({args.target}): bytes only\n")
    parts = args.parts.split(",")
    if "update" in parts:
        sizes = (256, 512, 512, 100) if args.small else (1024, 4096, 4096, 4096, 1000)
        print(update_only(sizes, args.blocks, steps=5), flush=True)
    if "transformer" in parts:
        shape = (2, 64, 32, 4) if args.small else (6, 512, 256, 32)
        print(transformer(*shape, args.blocks, steps=5), flush=True)
    if "population" in parts and TARGET is None:
        members = [1, 16, 64] if args.small else [1, 64, 1024, 4096]
        print(population(members, steps=20 if args.small else 100), flush=True)


if __name__ == "__main__":
    main()
