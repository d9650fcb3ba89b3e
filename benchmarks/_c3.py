import sys
import recursive_opt as ro
import tuning_free as tf

c = float(sys.argv[1])
t = ro.Stack[3](ro.Adam())
def mk(lr):
    return ro.Stack(tf._lr_only(lr), tf._upper(0.1, b1=0.5, clip=c), tf._upper(0.01, clip=c),
                    warmup=t.warmup, warmup_shape=t.warmup_shape).as_optax()
makers = {**tf.TASKS, **tf.HELDOUT_TASKS, **tf.FRESH_TASKS, **tf.FRESH2_TASKS}
keys = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else list(makers)
seeds = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "1,2,3").split(",")]
tf.seeds_table(keys, makers, 400, seeds, {f"clip {c}": mk})
