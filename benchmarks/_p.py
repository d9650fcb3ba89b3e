import sys, numpy as np, optax
import tuning_free as tf
import recursive_opt as ro

def tower(c2, c3):
    t = ro.Stack[3](ro.Adam())
    return ro.Stack(t.levels[0], tf._upper(0.1, b1=0.5, clip=c2), tf._upper(0.01, clip=c3), warmup=t.warmup, warmup_shape=t.warmup_shape).as_optax()

rows = {
    "prodigy": lambda _: optax.contrib.prodigy(),
    "clip2": lambda _: ro.Stack[3](ro.Adam()).as_optax(),
    "none": lambda _: tower(None, None),
    "l2only": lambda _: tower(2.0, None),
    "clip3": lambda _: tower(3.0, 3.0),
}
tasks = sys.argv[1].split(",")
seeds = [int(s) for s in sys.argv[2].split(",")]
for name in tasks:
    task = tf.TASKS[name]()
    for seed in seeds:
        tf.SEED = seed
        out = []
        for k, mk in rows.items():
            loss, _ = tf.run_lrs(task, mk, np.array([1e-3]), 400)
            out.append(f"{k} {float(loss[0]):.5g}")
        print(name, seed, " | ".join(out), flush=True)
