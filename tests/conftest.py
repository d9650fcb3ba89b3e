import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.random as jr
import pytest

# On a CPU the suite compiles several hundred small programs and runs most for a
# few steps, so compiling costs more than running: the same XLA programs,
# compiled with less LLVM optimisation (the whole suite 7:48-8:33 against
# 12:46-14:01 on 2 cores) and with XLA:CPU's older loop emitters for fusions
# instead of its fusion emitters (a depth-3 Adam tower's training loop compiles
# in 0.4 s instead of 1.3 s; the suite 4:55 against 7:58). Set before any backend
# starts and inherited by the subprocesses, which also get them as
# RO_TEST_XLA_FLAGS where they set XLA_FLAGS of their own (a device count; the
# documentation's blocks). A GPU run (a CUDA or ROCm plugin installed) keeps
# XLA's optimisation but asks for deterministic kernels: several tests compare
# two runs bit for bit (a resumed fit against an uninterrupted one), which a GPU
# guarantees only with them (kernels chosen by timing, atomics), as the README
# and the checkpoints how-to tell users. XLA aborts at start-up on a flag it does not know, and a jax
# older or newer than the one measured may lack one, so the first process (the
# xdist controller) tries each set in a fresh process and keeps the first that
# starts; the workers and subprocesses inherit its choice.
_GPU = any(
    importlib.util.find_spec(m) is not None
    for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin")
)
_LLVM = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
FLAG_SETS = (f"{_LLVM} --xla_cpu_use_fusion_emitters=false", _LLVM, "")
GPU_FLAG_SETS = ("--xla_gpu_deterministic_ops=true", "")


def _xla_starts_with(flags: str) -> bool:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}"
    code = "import jax; jax.devices()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    return out.returncode == 0


if "RO_TEST_XLA_FLAGS" not in os.environ:
    os.environ["RO_TEST_XLA_FLAGS"] = next(
        (f for f in (GPU_FLAG_SETS if _GPU else FLAG_SETS) if _xla_starts_with(f)), ""
    )
TEST_FLAGS = os.environ["RO_TEST_XLA_FLAGS"]
if TEST_FLAGS and TEST_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_FLAGS}"

# One persistent compilation cache for the whole run, shared by the xdist workers
# and the subprocesses some tests start (they inherit the environment): `ro.fit`
# and `ro.sweep` reuse compiled chunks only within a process, and the workers and
# subprocesses compile many identical programs. The first process to import this file (the
# xdist controller, which starts the workers) creates the directory and removes
# it at the end. Entries are written without a lock (JAX's locked mode, with a
# size limit, made the suite nearly twice as slow), so a process may read an
# entry another is still writing: JAX then warns and compiles the program itself,
# and pyproject.toml's filterwarnings lets that warning pass.
_OWNER = "RO_TEST_JAX_CACHE" not in os.environ
if _OWNER:
    os.environ["RO_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="ro-jax-cache-")
for _name, _value in {
    "jax_compilation_cache_dir": os.environ["RO_TEST_JAX_CACHE"],
    "jax_persistent_cache_min_compile_time_secs": 0,
    "jax_persistent_cache_min_entry_size_bytes": -1,
}.items():
    os.environ[_name.upper()] = str(_value)  # for the subprocesses
    jax.config.update(_name, _value)


def pytest_sessionfinish(session):
    if _OWNER and not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["RO_TEST_JAX_CACHE"], ignore_errors=True)


# Tolerances in the tests assume float64 where they say so; float32 parameters stay
# float32 (the library must not promote them).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Tests that compute one thing two ways (a sweep member against a separate fit, a
# jitted loop against a hand-written one) compare differently compiled programs.
# On a GPU, float32 matrix products default to reduced-precision (TF32) passes
# chosen per program, which alone puts such pairs ~1e-3 apart; full precision
# makes them agree as on a CPU.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def getkey():
    keys = iter(jr.split(jr.key(5678), 1000))
    return lambda: next(keys)
