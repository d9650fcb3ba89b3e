"""Shared pieces of the benchmark scripts: models, timing, tables, the machine."""

import contextlib
import os
import platform
import re
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import optax

PAPER_MLP = (784, 128, 10)  # the reference paper's MNIST MLP
LARGE_MLP = (784, 2048, 1536, 10)  # about 4.8M parameters


@contextlib.contextmanager
def upper_levels(vectors: bool):
    """Towers made and traced inside step their upper levels over the values
    below as vectors (the default) or one by one (`recursive_opt._flat`'s
    leaf-by-leaf path, as before 2026-12-07)."""
    from recursive_opt import _flat

    _flat._ENABLED = vectors
    try:
        yield
    finally:
        _flat._ENABLED = True


def next_to_me(name: str) -> str:
    """`name` in the benchmarks directory, wherever the script is run from."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def init_mlp(key, sizes=PAPER_MLP, dtype=jnp.float32):
    keys = jr.split(key, len(sizes) - 1)
    return [
        {"w": jr.normal(k, (a, b), dtype) / jnp.sqrt(a), "b": jnp.zeros(b, dtype)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp(params, x, activation=jnp.tanh):
    for layer in params[:-1]:
        x = activation(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mlp_loss(params, x, y):
    logits = mlp(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def n_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def make_step(tx: optax.GradientTransformation, loss=mlp_loss):
    """The whole jitted train step, with donated parameters and state."""

    def step(params, state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        if isinstance(tx, optax.GradientTransformationExtraArgs):  # the loss too
            updates, state = tx.update(grads, state, params, value=value)
        else:
            updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step, donate_argnums=(0, 1))


def step_runner(step: Callable, params, state, *batch, steps: int) -> Callable:
    """A block of `steps` calls of a `make_step` step from `(params, state)`
    (compiled here by a first call), each block going on from the last."""
    carry = [step(params, state, *batch)[:2]]

    def run():
        params, state = carry[0]
        for _ in range(steps):
            params, state, _ = step(params, state, *batch)
        jax.block_until_ready(params)
        carry[0] = (params, state)

    return run


def applied_update(update: Callable) -> Callable:
    """`update(grads, state, params)` applied to the parameters, jitted with
    parameters and state donated: `(params, state, grads) -> (new params, new
    state)`, what a training step moves besides its gradients (an update alone
    returns a fresh array next to the state it overwrites in place, and a GPU's
    XLA copies a donated moment for it)."""

    def step(params, state, grads):
        updates, state = update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def compiled_bytes(jitted: Callable, *args, device=None) -> float:
    """XLA's cost analysis of `jitted` compiled for `args`: "bytes accessed".

    `device`: a compile-only device (`gpu_target`) to compile for instead of the
    default backend; its executable has no cost analysis of its own, so XLA's
    cost analysis runs on the module its compiler optimised (fusions as that
    backend made them)."""
    return compiled_cost(jitted, *args, device=device)[0]


def compiled_cost(jitted: Callable, *args, device=None) -> tuple[float, int]:
    """`compiled_bytes`, and the kernels the compiled program launches: the
    fusions, library calls and copies of its entry computation."""
    if device is None:
        compiled = jitted.lower(*args).compile()
        cost = compiled.cost_analysis()
        if isinstance(cost, list):  # older jax: one dict per computation
            cost = cost[0]
        moved = float(cost["bytes accessed"])
    else:
        from jax._src.lib import _jax  # the module-level cost analysis: not public

        sharding = jax.sharding.SingleDeviceSharding(device)
        specs = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), args
        )
        compiled = jitted.lower(*specs).compile()
        (module,) = compiled.runtime_executable().hlo_modules()
        client = jax.devices("cpu")[0].client
        moved = float(_jax.hlo_module_cost_analysis(client, module)["bytes accessed"])
    text = compiled.as_text()
    entry = text[text.index("\nENTRY") :]
    entry = entry[: entry.index("\n}")]
    kernels = len(re.findall(r" (?:fusion|custom-call|copy)\(", entry))
    return moved, kernels


def gpu_target(config_path: str):
    """A compile-only CUDA device described by the XLA GPU target config (a text
    proto) at `config_path`: programs compile for it on a machine without a GPU.
    Needs jax's CUDA plugin (`pip install "jax[cuda12]"` at this jax's version);
    the programs run on the CPU backend (`JAX_PLATFORMS`, unless set)."""
    if not os.environ.get("JAX_PLATFORMS"):  # no GPU backend to start
        jax.config.update("jax_platforms", "cpu")
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")  # no driver here
    from jax.experimental import topologies

    with open(config_path) as f:
        config = f.read()
    try:
        topology = topologies.get_topology_desc(
            platform="cuda", topology="1x1x1", target_config=config
        )
    except Exception as e:  # no plugin, or one that cannot compile deviceless
        raise SystemExit(
            f"cannot compile for a GPU without one here ({type(e).__name__}: {e}); "
            f'install jax\'s CUDA plugin: pip install "jax[cuda12]=={jax.__version__}"'
        ) from None
    return topology.devices[0]


def time_alternating(
    runs: dict[str, Callable[[], None]], blocks: int
) -> dict[str, list[float]]:
    """Seconds of each run's block, the runs alternating block by block."""
    times = {name: [] for name in runs}
    for _ in range(blocks):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(times: list[float], base: list[float]) -> float:
    """Median over rounds of time / baseline time in the same round."""
    return statistics.median(t / b for t, b in zip(times, base))


def machine() -> str:
    device = jax.devices()[0]
    cores = os.cpu_count()
    kind = device.device_kind if device.platform != "cpu" else "CPU"
    return (
        f"{platform.machine()} {cores} cores, {device.platform} ({kind}) x "
        f"{jax.device_count()}, jax {jax.__version__}"
    )


def _cell(c) -> str:
    # Code such as `Stack[3](Adam(lr))` would read as a Markdown link.
    c = str(c)
    call = r"\w+\[[^\]]*\]\((?:[^()]|\([^()]*\))*\)"  # Stack[d](...), one nesting
    return re.sub(f"({call})", r"`\1`", c) if "](" in c else c


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def save(fig, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
