"""Memory of a tower's state next to the plain optimiser's, by depth and `per=`.

State bytes are the sum of the state's array sizes (after `init`, so exactly what
persists between steps). They are reported as extra bytes over plain optax and in
units of the model's parameter bytes (P). `per="element"` at every level multiplies
the hyperparameters at each level (level k+1 has one per coordinate of level k's
hyperparameters); "element at level 1" is the sensible per-coordinate tower.
Goal: a tower adds at most one gradient-sized buffer plus level 1's previous
state, whatever its depth: 3 P for
Adam (its two moments + one) and 2 P for SGD-momentum. XLA's compiled memory
statistics of the whole train step (arguments, outputs, temporaries) are shown
where the backend reports them.

    python benchmarks/memory.py [--depths 1,2,3,4,6] [--sizes 784,128,10]
"""

import argparse

import jax
import jax.random as jr
import optax
from _common import init_mlp, machine, make_step, table

import recursive_opt as ro

FAMILIES = {
    "SGD-m": (
        optax.sgd(0.01, momentum=0.9),
        lambda per: ro.SGD(ro.hyper(0.01, per=per), momentum=ro.hyper(0.9, per=per)),
        1,
    ),
    "Adam": (
        optax.adam(1e-3),
        lambda per: ro.Adam(
            ro.hyper(1e-3, per=per),
            b1=ro.hyper(0.9, per=per),
            b2=ro.hyper(0.999, per=per),
        ),
        2,
    ),
}


def nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def compiled_bytes(tx, params, x, y):
    try:
        stats = (
            make_step(tx)
            .lower(params, tx.init(params), x, y)
            .compile()
            .memory_analysis()
        )
    except Exception:  # some backends do not report
        return None
    if stats is None:
        return None
    return stats.temp_size_in_bytes, stats.argument_size_in_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,2,3,4,6")
    parser.add_argument("--sizes", default="784,128,10")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    sizes = tuple(int(s) for s in args.sizes.split(","))
    kx, ky, kp = jr.split(jr.key(0), 3)
    params = init_mlp(kp, sizes)
    x, y = jr.normal(kx, (256, sizes[0])), jr.randint(ky, (256,), 0, sizes[-1])
    p_bytes = nbytes(params)
    print(f"{machine()}; MLP {args.sizes}: P = {p_bytes} bytes of parameters\n")
    rows = []
    for family, (plain, make, moments) in FAMILIES.items():
        base = nbytes(plain.init(params))
        base_xla = compiled_bytes(plain, params, x, y)
        goal = (1 + moments) * p_bytes
        rows.append(
            [
                f"optax {family}",
                "-",
                "-",
                base,
                f"{base / p_bytes:.2f} P",
                "",
                "" if base_xla is None else base_xla[0],
                "",
            ]
        )
        for per in ("tree", "leaf", "element", "element at level 1"):
            for tie in (False, True):
                for d in depths:
                    if tie and (d == 1 or per == "element at level 1"):
                        continue
                    if per == "element" and d > 3:
                        continue  # grows 3x per level for Adam: see above
                    if per == "leaf" and not tie and d > 4:
                        # 3x more scalar leaves per level (972 at Adam's level 6):
                        # its step compiled for ~7 min here, and XLA:CPU crashed
                        # (SIGSEGV) compiling it in two runs of three.
                        continue
                    if per == "element at level 1":
                        tower = ro.Stack(make("element"), *[make("tree")] * (d - 1))
                    else:
                        # every level the same optimiser (Stack[d] would put its
                        # default levels above level 1)
                        tower = ro.Stack(*[make(per)] * d, tie=tie)
                    state = nbytes(tower.init(params))
                    extra = state - base
                    xla = compiled_bytes(tower.as_optax(), params, x, y)
                    rows.append(
                        [
                            family + (" tied" if tie else ""),
                            per,
                            d,
                            state,
                            f"{state / p_bytes:.2f} P",
                            f"{extra / p_bytes:+.2f} P",
                            "" if xla is None else xla[0],
                            # Scalar hyperparameters and counters aside.
                            "yes" if extra <= goal + 0.01 * p_bytes else "no",
                        ]
                    )
    print(
        table(
            [
                "tower",
                "per",
                "depth",
                "state bytes",
                "state / P",
                "extra over optax",
                "XLA temp bytes",
                "within goal",
            ],
            rows,
        )
    )
    print(
        "\nGoal: extra <= 2 P for SGD-momentum (one gradient + its momentum), "
        "<= 3 P for Adam (one gradient + its two moments)."
    )


if __name__ == "__main__":
    main()
