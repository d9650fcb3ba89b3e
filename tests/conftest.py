import jax
import jax.random as jr
import pytest

# Tolerances in the tests assume float64 where they say so; float32 parameters stay
# float32 (the library must not promote them).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    keys = iter(jr.split(jr.key(5678), 1000))
    return lambda: next(keys)
