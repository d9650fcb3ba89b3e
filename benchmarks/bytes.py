"""Bytes moved by one optimiser update: XLA's cost analysis next to a byte model.

On an accelerator an optimiser update is memory-bound: its time is the bytes it
reads and writes. For depths 1..D of a tower of SGD with momentum 0.9 and of
Adam, each with level 1's learning rate alone tuned (what `Stack[d](opt)` tunes)
or with its momentum / betas tuned as well, the update applied to the parameters
(`params + tower.update(grads, state, params)[0]`, parameters and state donated,
as in a training step) is compiled and its "bytes accessed" read from
`jax.jit(...).lower(...).compile().cost_analysis()`; the same for optax's update.
Units: P, one float32 array the size of the parameters, read or written once.

Why applied: an update alone returns a fresh array next to the state it
overwrites in place, and for that a GPU's XLA copies a donated moment after the
pass (optax Adam 8 P against 6 P read and written; a tower the same); applied to
donated parameters, as every training step does, the pass writes in place and
no copy is made (optax Adam 7 P, its model's bytes).

The byte model (float32), for the reference's order (a level's hyperparameters
are updated before the level below steps with them):

- optax SGD-m reads p, g and the buffer and writes p and the buffer: 5 P.
  optax Adam reads p, g, m and v and writes p, m and v: 7 P.
- A tower's level-1 hypergradient <g_t, d u_{t-1}/d h> is a reduction that must
  finish before the update pass can start, so it is a pass of its own over g_t and
  whatever stands for the column d u_{t-1}/d h; the update pass then moves
  optax's bytes, plus the write of each stored column.
- The learning rate's column (log transform) is the previous update itself:
  -lr * buf for SGD-m, read in the first pass with g (+2 P: 7 P, 1.40x);
  -lr * m_hat / (sqrt(v_hat) + eps) for Adam, recomputed from g, m and v in the
  first pass or stored (read with g, written in the second): +3 P either way
  (10 P, 1.43x), +2 P stored in bfloat16 (9 P, 1.29x).
- A momentum's or beta's column depends on the previous gradient too: it is kept,
  read in the first pass and written in the second (+2 P each, +1 P in
  bfloat16): SGD-m with its momentum 9 P (1.80x), Adam with its betas 14 P
  (2.00x), 11 P with bfloat16 columns (1.57x).
- Levels above level 1 act on a few scalars: no parameter-sized bytes.

The fused order (`ro.OneStep(fused=True)`, rows "fused"): the model steps with the
hyperparameters it has and the hypergradient then moves them, so the reduction
and the update read the same arrays and may be one pass: optax's bytes with the
learning rate alone tuned (SGD-m 5 P, Adam 7 P, Adam's column recomputed from the
moments), plus the read and write of each stored column (SGD-m with its momentum:
the last gradients, 7 P; Adam with its betas 11 P, or 9 P in bfloat16). Whether
the compiler makes it one pass is backend-specific; XLA:CPU does not.

What the library does: SGD-m's learning-rate column is recomputed from the
buffer (no record). Adam keeps its columns, also the learning rate's: recomputing
that one from the moments costs a square root and a division per coordinate in
the first pass, which on XLA:CPU made a depth-3 step on a 4.8M MLP 1.40x optax
instead of 1.10x for no saving in the model's bytes. The rows "bf16 record"
store the columns in bfloat16 (`ro.OneStep(record_dtype=jnp.bfloat16)`).

The rows "HoldCuts" wrap the default tower in `ro.HoldCuts` (depth >= 2; depth 1
is the optimiser alone): its first-order prediction g . u is a reduction over
what the update pass reads (g) and writes (u), so its floor is the tower's. The
row "DistanceFloor" wraps it in `ro.DistanceFloor`, whose estimate reads the
starting point and reads and writes a gradient sum: the tower's floor plus 3 P.

XLA:CPU fuses differently from a GPU's XLA, so CPU bytes are a rough proxy.
`--target benchmarks/h200.txtpb` compiles for a GPU instead, on a machine
without one: a compile-only CUDA device described by an XLA GPU target config
(here an NVIDIA H200's), which needs jax's CUDA plugin installed (`pip install
"jax[cuda12]==<this jax's version>"`, about 5 GB) and no driver. The executable
has no cost analysis of its own, so XLA's (device-independent) cost analysis
reads the module the GPU compiler optimised: the fusions are the GPU's. On a
machine with a GPU, plain `bytes.py` measures that GPU.

    python benchmarks/bytes.py [--depths 4] [--size 2048] [--target CONFIG]
"""

import argparse
import os

import jax
import jax.numpy as jnp
import optax
from _common import (
    applied_update,
    compiled_bytes,
    gpu_target,
    machine,
    next_to_me,
    table,
)

import recursive_opt as ro

FLOOR = {  # (family, tuned set): (optax's bytes, the tower's floor), in P
    ("SGD-m", "lr"): (5, 7),
    ("SGD-m", "lr, momentum"): (5, 9),
    ("Adam", "lr"): (7, 10),
    ("Adam", "lr, b1, b2"): (7, 14),
    # Stored columns in bfloat16 (`OneStep(record_dtype=jnp.bfloat16)`): a column
    # costs 1 P (written and read at half size) instead of 2 P.
    ("Adam", "lr, bf16 record"): (7, 9),
    ("Adam", "lr, b1, b2, bf16 record"): (7, 11),
    # The fused order (`OneStep(fused=True)`): one pass reads p, g, the state and
    # any stored columns, and writes p, the state and the new columns.
    ("SGD-m", "lr, fused"): (5, 5),
    ("SGD-m", "lr, momentum, fused"): (5, 7),
    ("Adam", "lr, fused"): (7, 7),
    ("Adam", "lr, b1, b2, fused"): (7, 11),
    ("Adam", "lr, b1, b2, bf16 record, fused"): (7, 9),
    # `ro.HoldCuts` around the default tower (depth >= 2): its prediction g . u
    # reads what the update pass reads and writes, so the floor is the tower's.
    ("SGD-m", "lr, HoldCuts"): (5, 7),
    ("Adam", "lr, HoldCuts"): (7, 10),
    # `ro.DistanceFloor` around it: prodigy's estimate reads the starting point
    # and reads and writes its gradient sum, 3 P more than the tower's floor.
    ("Adam", "lr, DistanceFloor"): (7, 13),
}


def towers(family: str, tuned: str, depth: int, layout: str | None = None):
    if family == "SGD-m":
        momentum = ro.hyper(0.9) if "momentum" in tuned else 0.9
        level1 = ro.SGD(0.01, momentum=momentum)
    else:
        betas = {"b1": ro.hyper(0.9), "b2": ro.hyper(0.999)} if "b1" in tuned else {}
        level1 = ro.Adam(1e-3, **betas)
    record = jnp.bfloat16 if "bf16 record" in tuned else None
    scheme = ro.OneStep(
        record_dtype=record, fused="fused" in tuned, record_layout=layout
    )
    tower = ro.Stack[depth](level1, hypergradient=scheme)
    if "HoldCuts" in tuned and depth > 1:
        held = ro.HoldCuts(tower)
        return held.init, lambda g, s, p: held.update(g, s, p, value=jnp.float32(1))
    if "DistanceFloor" in tuned and depth > 1:
        floor = ro.DistanceFloor(tower)
        return floor.init, floor.update
    return tower.init, tower.update


def bytes_accessed(update, grads, state, params, device=None) -> float:
    """Bytes the compiled update moves, applied to the parameters (`params +
    update(grads, state, params)[0]`, parameters and state donated), compiled for
    `device` if given (a compile-only device)."""
    jitted = applied_update(update)
    return compiled_bytes(jitted, params, state, grads, device=device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048, help="w is size x size")
    parser.add_argument(
        "--target",
        help="an XLA GPU target config to compile for, without a GPU (e.g. "
        f"{os.path.relpath(next_to_me('h200.txtpb'))}; needs jax's CUDA plugin)",
    )
    args = parser.parse_args()
    device = gpu_target(args.target) if args.target else None
    # The layout a GPU's default picks (`OneStep(record_layout=None)`), where the
    # tower is made on this machine's CPU.
    layout = "separate" if device is not None else None

    n = args.size
    params = {"w": jnp.full((n, n), 0.01, jnp.float32), "b": jnp.zeros(n, jnp.float32)}
    grads = jax.tree.map(lambda p: p + 1e-3, params)
    p_bytes = 4 * sum(x.size for x in jax.tree.leaves(params))
    print(machine())
    if device is not None:
        print(f"compiled for {device.device_kind} ({args.target}), no GPU used")
    print(f"{p_bytes / 4 / 1e6:.2f}M float32 parameters; P = {p_bytes / 1e6:.1f} MB\n")

    optax_of = {"SGD-m": optax.sgd(0.01, momentum=0.9), "Adam": optax.adam(1e-3)}
    rows, summary = [], {}
    for (family, tuned), (model_optax, floor) in FLOOR.items():
        tx = optax_of[family]
        base = bytes_accessed(tx.update, grads, tx.init(params), params, device)
        base /= p_bytes
        row = [family, tuned, f"{base:.2f} ({model_optax})"]
        for depth in range(1, args.depths + 1):
            init, update = towers(family, tuned, depth, layout)
            measured = bytes_accessed(update, grads, init(params), params, device)
            measured /= p_bytes
            row.append(f"{measured:.2f} ({measured / base:.2f}x)")
            summary[(family, tuned, depth)] = measured / base
        row.append(f"{floor} ({floor / model_optax:.2f}x)")
        rows.append(row)
    header = ["family", "tuned at level 1", "optax P (model)"]
    header += [f"depth {d} P (x optax)" for d in range(1, args.depths + 1)]
    header += ["floor P (x optax)"]
    print(table(header, rows))
    if args.depths >= 3:
        print(
            "\nDepth 3, x optax's bytes: "
            + ", ".join(
                f"{family} {tuned}: {summary[(family, tuned, 3)]:.2f}x"
                for family, tuned in FLOOR
            )
        )


if __name__ == "__main__":
    main()
