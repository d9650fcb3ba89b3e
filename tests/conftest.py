import jax
import jax.random as jr
import pytest

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
