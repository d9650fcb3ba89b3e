"""Checkpoint and resume: bit-identical after SIGKILL, clear errors otherwise."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import recursive_opt as ro
from recursive_opt._checkpoint import list_checkpoints

from .test_fit import QUAD, batches, linear_loss, linear_params


def assert_runs_identical(a, b):
    for x, y in zip(
        jax.tree.leaves((a.params, a.state)), jax.tree.leaves((b.params, b.state))
    ):
        np.testing.assert_array_equal(x, y)
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        np.testing.assert_array_equal(a.history[k], b.history[k], err_msg=k)


def run(directory, steps, tower=None, data=None, **kwargs):
    options = dict(batch_size=16, log_every=5, checkpoint_every=10, progress=False)
    options.update(kwargs)
    return ro.fit(
        linear_loss,
        linear_params(),
        tower or ro.Stack[2](ro.Adam(0.05)),
        QUAD.train if data is None else data,
        steps=steps,
        checkpoint_dir=directory,
        **options,
    )


def test_resume_continues_exactly(tmp_path):
    straight = run(tmp_path / "a", 43, eval_data=QUAD.test)
    run(tmp_path / "b", 20, eval_data=QUAD.test)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [10, 20]
    resumed = run(tmp_path / "b", 43, eval_data=QUAD.test)
    assert_runs_identical(straight, resumed)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [40, 43]
    # Asking for the steps already done returns the checkpointed run.
    assert_runs_identical(straight, run(tmp_path / "b", 43, eval_data=QUAD.test))


def test_resume_with_an_iterator_skips_used_batches(tmp_path):
    straight = run(tmp_path / "a", 30, data=batches(30))
    run(tmp_path / "b", 20, data=batches(30))
    assert_runs_identical(straight, run(tmp_path / "b", 30, data=batches(30)))


def test_corrupt_checkpoints_raise(tmp_path):
    run(tmp_path, 20)
    _, path = list_checkpoints(tmp_path)[-1]
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])  # truncated
    with pytest.raises(ro.CheckpointError, match="corrupt"):
        run(tmp_path, 30)
    middle = len(blob) // 2
    blob[middle] ^= 0xFF  # one flipped byte
    with open(path, "wb") as f:
        f.write(blob)
    with pytest.raises(ro.CheckpointError, match="corrupt"):
        run(tmp_path, 30)
    os.remove(path)  # the documented way out: resume from the one before
    assert run(tmp_path, 30).step == 30


def test_mismatched_checkpoints_raise(tmp_path):
    run(tmp_path, 10)
    with pytest.raises(ro.CheckpointError, match="initial parameters, hyperparameters"):
        run(tmp_path, 20, tower=ro.Stack[2](ro.Adam(0.01)))
    with pytest.raises(ro.CheckpointError, match="structure differs"):
        run(tmp_path, 20, tower=ro.Stack[3](ro.Adam(0.05)))
    with pytest.raises(ro.CheckpointError, match="batch_size was 16, now 8"):
        run(tmp_path, 20, batch_size=8)
    with pytest.raises(ro.CheckpointError, match="initial parameters"):
        run(tmp_path, 20, key=1)
    with pytest.raises(ValueError, match="beyond steps=5"):
        run(tmp_path, 5)


def test_leftover_temporary_files_are_ignored(tmp_path):
    run(tmp_path, 10)
    (tmp_path / ".tmp-123.npz").write_bytes(b"half a checkpoint")
    assert run(tmp_path, 20).step == 20


SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np, optax
    import recursive_opt as ro

    data = ro.make_gaussian_mixture(dim=128, classes=8, n=2048, seed=3)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w1": jax.random.normal(k1, (128, 256)) / 11, "b1": jnp.zeros(256),
              "w2": jax.random.normal(k2, (256, 8)) / 16, "b2": jnp.zeros(8)}

    def loss(p, batch):
        x, y = batch
        logits = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    res = ro.fit(loss, params, ro.Stack[3](ro.Adam(1e-3)), data.train, steps=800,
                 log_every=20, checkpoint_dir=sys.argv[1], checkpoint_every=20,
                 progress=False)
    leaves = jax.tree.leaves((res.params, res.state))
    np.savez(sys.argv[2], *leaves, **{"h_" + k: v for k, v in res.history.items()})
    """
)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def start(directory, out, **kwargs):
        return subprocess.Popen(
            [sys.executable, str(script), str(directory), str(out)], env=env, **kwargs
        )

    def finish(process):
        out = process.communicate(timeout=300)[0]
        assert process.returncode == 0, out.decode()[-3000:]

    # The uninterrupted reference runs alongside the run that is killed.
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ref = start(tmp_path / "ref", tmp_path / "ref.npz", **pipe)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = start(tmp_path / "run", tmp_path / "run.npz", **quiet)
    deadline = time.monotonic() + 240
    while not list_checkpoints(tmp_path / "run") or (
        list_checkpoints(tmp_path / "run")[-1][0] < 100
    ):
        assert killed.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(np.random.default_rng().uniform(0, 0.3))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    at = list_checkpoints(tmp_path / "run")[-1][0]
    assert 100 <= at < 800, at

    finish(start(tmp_path / "run", tmp_path / "run.npz", **pipe))
    finish(ref)
    with np.load(tmp_path / "ref.npz") as a, np.load(tmp_path / "run.npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
