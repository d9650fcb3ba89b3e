"""A population of towers spread over several processes (hosts) with `ro.sweep`.

Every process runs this same script. JAX joins them into one set of global devices
and `ro.sweep` shards the population axis over all of them; every process gets the
whole result.

On a cluster that JAX recognises (SLURM, Cloud TPU pods, Kubernetes with the usual
environment variables) run it with no arguments on every host:

    python examples/multihost_sweep.py

Elsewhere name the coordinator and each process's id, e.g. two processes on one
machine, each with two simulated CPU devices:

    python examples/multihost_sweep.py --coordinator localhost:12355 \\
        --num-processes 2 --process-id 0 --cpu-devices 2 &
    python examples/multihost_sweep.py --coordinator localhost:12355 \\
        --num-processes 2 --process-id 1 --cpu-devices 2
"""

import argparse
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--cpu-devices", type=int, help="simulated CPU devices each")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--x64", action="store_true", help="run in float64")
    parser.add_argument("--out", help="write the final losses to this .npy file")
    args = parser.parse_args()
    if args.cpu_devices:
        os.environ["XLA_FLAGS"] = (  # added to any the user set
            f"{os.environ.get('XLA_FLAGS', '')} "
            f"--xla_force_host_platform_device_count={args.cpu_devices}"
        )
    import jax

    if args.cpu_devices:
        jax.config.update("jax_platforms", "cpu")
        # CPU collectives between processes.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_x64", args.x64)
    # Must come before any other use of JAX.
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    import jax.numpy as jnp
    import numpy as np

    import recursive_opt as ro

    x, y = ro.make_quadratic(dim=6, n=96, seed=1).train
    dtype = np.float64 if args.x64 else np.float32
    x, y = x.astype(dtype), y.astype(dtype)

    def loss(params, batch):
        return jnp.mean((batch[0] @ params["w"] - batch[1]) ** 2)

    res = ro.sweep(
        loss,
        {"w": jnp.zeros(6, dtype)},
        ro.Stack[2](ro.Adam(1e-2)),
        (x, y),
        steps=args.steps,
        batch_size=16,
        log_every=10,
        over={"lr": np.logspace(-3, -1, 6)},
        progress=jax.process_index() == 0,
    )
    print(
        f"process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.device_count()} devices: final losses {np.round(res.final_loss, 4)}"
    )
    if args.out:
        np.save(args.out, res.final_loss)


if __name__ == "__main__":
    main()
