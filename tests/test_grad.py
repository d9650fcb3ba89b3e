"""jax.grad through training with a tower: meta-gradients of initial hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro

from .helpers import PROBLEMS, copies

logistic = PROBLEMS[1]


def _final_loss(lr, b1, tie):
    tower = copies(3, ro.Adam(lr, b1=b1), tie)
    params = logistic.init(jax.random.key(0))

    def body(carry, _):
        params, state = carry
        grads = jax.grad(logistic.loss)(params)
        updates, state = tower.update(grads, state, params)
        return (ro.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (params, tower.init(params)), None, length=8)
    return logistic.loss(params)


@pytest.mark.parametrize("tie", [False, True])
def test_grad_of_final_loss_wrt_initial_hyperparameters(tie):
    lr, b1 = 0.05, 0.8
    # One compiled program gives the gradient and the finite differences' values.
    value_and_grad = jax.jit(
        jax.value_and_grad(_final_loss, argnums=(0, 1)), static_argnums=2
    )
    _, (g_lr, g_b1) = value_and_grad(lr, b1, tie)

    def f(lr, b1, tie):
        return value_and_grad(lr, b1, tie)[0]

    h = 1e-6
    fd_lr = (f(lr + h, b1, tie) - f(lr - h, b1, tie)) / (2 * h)
    fd_b1 = (f(lr, b1 + h, tie) - f(lr, b1 - h, tie)) / (2 * h)
    np.testing.assert_allclose(g_lr, fd_lr, rtol=1e-5)
    np.testing.assert_allclose(g_b1, fd_b1, rtol=1e-5)
    assert jnp.abs(g_lr) > 0 and jnp.abs(g_b1) > 0
