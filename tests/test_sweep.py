"""ro.sweep: members equal separate fits; levels, seeds, errors; 8 sharded devices."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro

from .helpers import copies, subprocess_env
from .test_fit import QUAD, linear_loss, linear_params

OPTIONS = dict(steps=24, batch_size=16, log_every=8, progress=False)


def test_members_equal_separate_fits():
    tower = copies(2, ro.SGD(0.01, momentum=0.5))
    lrs = np.array([1e-3, 5e-2])
    res = ro.sweep(
        linear_loss,
        linear_params(),
        tower,
        QUAD.train,
        over={"lr": lrs},
        eval_data=QUAD.test,
        **OPTIONS,
    )
    assert res.final_loss.shape == (2,)
    assert res.history["loss"].shape == (2, 3)
    assert res.history["level2/lr"].shape == (2, 3)
    for i, lr in enumerate(lrs):
        one = ro.fit(
            linear_loss,
            linear_params(),
            ro.Stack(ro.SGD(lr, momentum=0.5), ro.SGD(0.01, momentum=0.5)),
            QUAD.train,
            eval_data=QUAD.test,
            **OPTIONS,
        )
        for k in one.history:
            np.testing.assert_allclose(
                res.history[k][i], one.history[k], rtol=1e-5, err_msg=k
            )
        np.testing.assert_allclose(
            res.params["w"][i], one.params["w"], rtol=1e-5, atol=1e-7
        )
    np.testing.assert_array_equal(res.final_loss, res.history["loss"][:, -1])
    np.testing.assert_array_equal(res.values["lr"], lrs)


def test_a_second_sweep_with_other_values_compiles_nothing():
    traced = []

    def loss(p, b):
        traced.append(1)
        return linear_loss(p, b)

    def run(lrs, loss_fn=loss):
        tower = copies(2, ro.SGD(0.01, momentum=0.5))
        over = {"lr": np.array(lrs)}
        return ro.sweep(
            loss_fn, linear_params(), tower, QUAD.train, over=over, **OPTIONS
        )

    first = run([1e-3, 5e-2])
    n = len(traced)
    second = run([2e-2, 1e-1])
    assert n and len(traced) == n
    fresh = run([2e-2, 1e-1], lambda p, b: linear_loss(p, b))  # compiled anew
    for k in fresh.history:
        np.testing.assert_allclose(second.history[k], fresh.history[k], err_msg=k)
    assert not np.allclose(first.final_loss, second.final_loss)
    text = repr(first)  # a summary, not the stacked arrays
    assert text.startswith("SweepResult(members=2, lr=[0.001, 0.05], final_loss=[")
    assert "Array" not in text and "\n" not in text


def test_sweep_an_upper_level_and_several_hyperparameters():
    # In float64: Adam's normalised steps amplify float32 rounding, which differs
    # between a vmapped and a single run.
    data = tuple(np.asarray(a, np.float64) for a in QUAD.train)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), linear_params())
    tower = copies(3, ro.Adam(0.01))
    res = ro.sweep(
        linear_loss,
        params,
        tower,
        data,
        level=2,
        over={"lr": [1e-4, 1e-2], "b1": [0.5, 0.9]},
        **OPTIONS,
    )
    one = ro.fit(
        linear_loss,
        params,
        ro.Stack(ro.Adam(0.01), ro.Adam(1e-4, b1=0.5), ro.Adam(0.01)),
        data,
        **OPTIONS,
    )
    for k in one.history:
        np.testing.assert_allclose(
            res.history[k][0], one.history[k], rtol=1e-8, err_msg=k
        )
    np.testing.assert_allclose(res.history["level2/b1"][:, 0], [0.5, 0.9], rtol=0.05)


def test_seeds_initialise_and_shuffle_per_member():
    def init(key):
        return {"w": jax.random.normal(key, (6,)), "b": jnp.zeros([])}

    res = ro.sweep(
        linear_loss, init, ro.Adam(0.01), QUAD.train, seeds=[0, 1, 0], **OPTIONS
    )
    np.testing.assert_array_equal(res.params["w"][0], res.params["w"][2])
    assert not np.allclose(res.params["w"][0], res.params["w"][1])
    # Seeds with a fixed starting point: only the data order differs.
    res = ro.sweep(
        linear_loss,
        linear_params(),
        ro.Adam(0.01),
        QUAD.train,
        seeds=[3, 4],
        over={"lr": [0.01, 0.01]},
        **OPTIONS,
    )
    assert not np.allclose(res.params["w"][0], res.params["w"][1])


def test_a_diverging_member_does_not_spoil_the_others():
    res = ro.sweep(
        linear_loss,
        linear_params(),
        ro.SGD(0.01),
        QUAD.train,
        over={"lr": [0.01, 1e4]},
        **OPTIONS,
    )
    assert res.skipped[0] == 0 and res.skipped[1] > 0
    assert np.isfinite(res.final_loss[0])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(res.params))


def test_set_hyperparams_per_element():
    tower = ro.Stack[2](ro.SGD(ro.hyper(0.1, per="element")))
    state = tower.init(linear_params()).set_hyperparams(1, {"lr": 0.25})
    lr = ro.hyperparams(state)[0]["lr"]
    np.testing.assert_allclose(lr["w"], np.full(6, 0.25), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"over": {"lrr": [0.1]}}, "'lrr' is not a hyperparameter of level 1"),
        ({"over": {"lr": [0.1, -1.0]}}, r"values \[-1.0\] outside the valid range"),
        ({"over": {"lr": [0.1, 0.2]}, "seeds": [1]}, "same length"),
        ({"over": {"lr": [0.1]}, "level": 3}, "level must be an integer from 1 to 2"),
        ({}, "needs `over`"),
    ],
)
def test_sweep_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ro.sweep(
            linear_loss,
            linear_params(),
            ro.Stack[2](ro.SGD(0.1)),
            QUAD.train,
            steps=2,
            progress=False,
            **kwargs,
        )


@pytest.mark.parametrize(
    "tower, hi",
    [
        (ro.Stack[2](ro.Adam(0.1)), 1.0),  # the default's ceiling on its lr
        (ro.Stack[2](ro.Adam(ro.hyper(0.1, bounds=(None, 0.5)))), 0.5),
    ],
    ids=["default_ceiling", "declared"],
)
def test_sweep_values_outside_a_bound_are_refused_not_clipped(tower, hi):
    with pytest.raises(
        ValueError, match=rf"values \[2.0\] outside the bounds \(None, {hi}\)"
    ):
        ro.sweep(
            linear_loss,
            linear_params(),
            tower,
            QUAD.train,
            steps=2,
            progress=False,
            over={"lr": [0.25, 2.0]},
        )


def test_tied_towers_have_one_level():
    with pytest.raises(ValueError, match="tied tower has one shared set"):
        ro.sweep(
            linear_loss,
            linear_params(),
            ro.Stack[3](ro.SGD(0.1), tie=True),
            QUAD.train,
            steps=2,
            over={"lr": [0.1]},
            level=2,
            progress=False,
        )


SHARDED = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    import recursive_opt as ro

    # float64: Adam's normalised steps amplify float32 rounding, which differs
    # between programs compiled for different shardings.
    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == 8, jax.devices()
    data = ro.make_quadratic(dim=6, n=96, seed=1)
    data = tuple(np.asarray(a, np.float64) for a in data.train)

    def loss(p, b):
        return jnp.mean((b[0] @ p["w"] - b[1]) ** 2)

    params = {"w": jnp.zeros(6)}
    tower = ro.Stack[2](ro.Adam(1e-2))
    # Check that the population is really spread over the 8 devices.
    from recursive_opt import _sweep
    seen = []
    real_put = jax.device_put
    def spy(x, s=None, **kw):
        out = real_put(x, s, **kw)
        if s is not None:  # the library's placements (jax itself may call it bare)
            seen.extend(len(l.sharding.device_set) for l in jax.tree.leaves(out))
        return out
    for n in (12,):  # 12 members: padded to 16, two per device
        lrs = np.logspace(-3, -1, n)
        kw = dict(steps=20, batch_size=16, log_every=10, over={"lr": lrs}, progress=False)
        _sweep.jax.device_put = spy
        many = ro.sweep(loss, params, tower, data, **kw)
        _sweep.jax.device_put = real_put
        assert seen and min(seen) == 8, seen
        one = ro.sweep(loss, params, tower, data, devices=jax.devices()[:1], **kw)
        assert many.final_loss.shape == (n,)
        for k in one.history:
            np.testing.assert_allclose(many.history[k], one.history[k], rtol=1e-8, err_msg=k)
        # Differently compiled float64 programs round differently; Adam's normalised
        # steps amplify that to ~1e-10 after 20 steps. A wrong member would be off
        # by O(1): the lrs differ by 100x.
        np.testing.assert_allclose(many.params["w"], one.params["w"], rtol=1e-8)
        assert len({tuple(w) for w in many.params["w"]}) == n  # members differ
    print("sharded ok")
    """
)


MODEL_SHARDED = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import recursive_opt as ro

    jax.config.update("jax_enable_x64", True)
    mesh = Mesh(np.array(jax.devices()), ("d",))
    split = NamedSharding(mesh, P("d"))
    x = np.random.default_rng(0).normal(size=(32, 8))

    def loss(p):
        h = jnp.tanh(x @ p["w"] + p["b"])
        return jnp.mean((h @ p["v"] - 1.0) ** 2)

    init = {"w": np.full((8, 6), 0.1), "b": np.zeros(6), "v": np.full(6, 0.2)}
    tower = ro.Stack[3](ro.Adam(1e-2))

    def run(params):
        state = tower.init(params)
        step = jax.jit(lambda p, s: tower.step(loss, p, s))
        hlo = step.lower(params, state).compile().as_text()
        for _ in range(30):
            params, state, _ = step(params, state)
        return params, state, hlo

    # Small arrays split over both devices: they and their moments must stay out
    # of the packed vectors of scalars, which would otherwise be split too and
    # be moved between the devices in pieces at every step (or hang XLA:CPU).
    sharded = {k: jax.device_put(v, split) for k, v in init.items()}
    p2, s2, hlo = run(sharded)
    p1, s1, _ = run(jax.tree.map(jnp.asarray, init))
    assert "collective-permute" not in hlo
    assert all(len(f.sharding.device_set) == 1 or f.sharding.is_fully_replicated
               for f in s2.packed.flats)
    assert len(p2["w"].sharding.device_set) == 2
    for k in init:
        np.testing.assert_allclose(p2[k], p1[k], rtol=1e-9, err_msg=k)
    for a, b in zip(jax.tree.leaves(ro.hyperparams(s2)), jax.tree.leaves(ro.hyperparams(s1))):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    print("model sharded ok")
    """
)


def _run_on_cpu_devices(tmp_path, source: str, done: str) -> None:
    """Run `source` as a script in a fresh process (its own XLA_FLAGS set the
    device count, which a running jax cannot change) and check it printed `done`."""
    script = tmp_path / "script.py"
    script.write_text(source)
    env = subprocess_env(JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert done in out.stdout


def test_tower_on_parameters_split_over_two_devices(tmp_path):
    _run_on_cpu_devices(tmp_path, MODEL_SHARDED, "model sharded ok")


def test_sharded_over_eight_cpu_devices_equals_one_device(tmp_path):
    _run_on_cpu_devices(tmp_path, SHARDED, "sharded ok")


def test_two_processes_on_localhost_equal_one(tmp_path):
    """The documented multi-host example, run as two CPU processes with gloo."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    script = os.path.join(
        os.path.dirname(__file__), "..", "examples", "multihost_sweep.py"
    )
    env = subprocess_env()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                script,
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--cpu-devices",
                "2",
                "--steps",
                "20",
                "--x64",
                "--out",
                str(tmp_path / f"{i}.npy"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out[-4000:]
        assert "of 2, 4 devices" in out
    a, b = np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy")
    np.testing.assert_array_equal(a, b)
    # The same sweep in this single process (float64 here too).
    x, y = ro.make_quadratic(dim=6, n=96, seed=1).train
    x, y = x.astype(np.float64), y.astype(np.float64)
    ref = ro.sweep(
        lambda p, bt: jnp.mean((bt[0] @ p["w"] - bt[1]) ** 2),
        {"w": jnp.zeros(6)},
        ro.Stack[2](ro.Adam(1e-2)),
        (x, y),
        steps=20,
        batch_size=16,
        log_every=10,
        over={"lr": np.logspace(-3, -1, 6)},
        progress=False,
    )
    np.testing.assert_allclose(a, ref.final_loss, rtol=1e-8)
