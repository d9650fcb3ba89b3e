"""Parity with the original PyTorch implementation (gradient-descent-the-ultimate-
optimizer 1.0): same initial weights and data, same loss and learning-rate
trajectories."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recursive_opt as ro

torch = pytest.importorskip("torch")
gdtuo = pytest.importorskip("gradient_descent_the_ultimate_optimizer.gdtuo")

# The reference calls backward(create_graph=True), which torch warns about.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using backward\\(\\) with create_graph=True"
)

STEPS = 40
N_IN, N_HIDDEN, N_OUT, BATCH = 12, 16, 4, 32


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, BATCH, N_IN)).astype(np.float32)
    y = rng.integers(0, N_OUT, size=(4, BATCH))
    w = {
        "w1": rng.normal(scale=0.4, size=(N_HIDDEN, N_IN)).astype(np.float32),
        "b1": np.zeros(N_HIDDEN, np.float32),
        "w2": rng.normal(scale=0.4, size=(N_OUT, N_HIDDEN)).astype(np.float32),
        "b2": np.zeros(N_OUT, np.float32),
    }
    return x, y, w


def _run_reference(make_optimizer, read_hypers, dtype=np.float32):
    x, y, w = _data()
    x, w = x.astype(dtype), {k: v.astype(dtype) for k, v in w.items()}
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        return _reference_steps(make_optimizer, read_hypers, x, y, w)
    finally:
        torch.set_default_dtype(default)


def _reference_steps(make_optimizer, read_hypers, x, y, w):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_IN, N_HIDDEN),
        torch.nn.Tanh(),
        torch.nn.Linear(N_HIDDEN, N_OUT),
    )
    with torch.no_grad():
        for layer, (wk, bk) in zip([model[0], model[2]], [("w1", "b1"), ("w2", "b2")]):
            layer.weight.copy_(torch.from_numpy(w[wk]))
            layer.bias.copy_(torch.from_numpy(w[bk]))
    opt = make_optimizer()
    wrapped = gdtuo.ModuleWrapper(model, optimizer=opt)
    wrapped.initialize()
    losses, hypers = [], []
    for t in range(STEPS):
        wrapped.begin()
        wrapped.zero_grad()
        xb, yb = torch.from_numpy(x[t % 4]), torch.from_numpy(y[t % 4])
        loss = torch.nn.functional.cross_entropy(wrapped.forward(xb), yb)
        loss.backward(create_graph=True)
        wrapped.step()
        losses.append(loss.item())
        hypers.append(read_hypers(opt))
    return np.array(losses), np.array(hypers)


def _loss(p, xb, yb):
    h = jnp.tanh(xb @ p["w1"].T + p["b1"][None])
    logits = h @ p["w2"].T + p["b2"][None]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()


def _run_ours(tower, read_hypers, adjust_state=lambda s: s, dtype=np.float32):
    x, y, w = _data()
    x = x.astype(dtype)
    params = {k: jnp.asarray(v, dtype) for k, v in w.items()}
    state = adjust_state(tower.init(params))

    @jax.jit
    def step(params, state, xb, yb):
        loss, grads = jax.value_and_grad(_loss)(params, xb, yb)
        updates, state = tower.update(grads, state, params)
        return ro.apply_updates(params, updates), state, loss

    losses, hypers = [], []
    for t in range(STEPS):
        params, state, loss = step(params, state, x[t % 4], y[t % 4])
        assert params["w1"].dtype == dtype
        losses.append(float(loss))
        hypers.append(read_hypers(ro.hyperparams(state)))
    return np.array(losses), np.array(hypers)


def _identity(v):
    return ro.hyper(v, transform="identity")


def test_sgd_tuned_by_sgd():
    ref_losses, ref_lr = _run_reference(
        lambda: gdtuo.SGD(alpha=0.1, optimizer=gdtuo.SGD(alpha=0.1)),
        lambda o: [o.parameters["alpha"].item()],
    )
    losses, lr = _run_ours(
        ro.Stack(ro.SGD(_identity(0.1)), ro.SGD(_identity(0.1))),
        lambda hp: [float(hp[0]["lr"])],
    )
    assert abs(lr[-1, 0] - 0.1) > 1e-3, lr[-1]  # the learning rate really moved
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-6)
    np.testing.assert_allclose(lr, ref_lr, rtol=2e-6)


def test_sgd_momentum_tuned_by_sgd_tuned_by_sgd():
    ref_losses, ref_hp = _run_reference(
        lambda: gdtuo.SGD(
            alpha=0.05,
            mu=0.9,
            optimizer=gdtuo.SGD(alpha=1e-2, optimizer=gdtuo.SGD(alpha=1e-3)),
        ),
        lambda o: [
            o.parameters["alpha"].item(),
            o.parameters["mu"].item(),
            o.optimizer.parameters["alpha"].item(),
        ],
    )
    tower = ro.Stack(
        ro.SGD(_identity(0.05), momentum=_identity(0.9)),
        ro.SGD(_identity(1e-2)),
        ro.SGD(_identity(1e-3)),
    )
    losses, hp = _run_ours(
        tower,
        lambda hp: [float(hp[0]["lr"]), float(hp[0]["momentum"]), float(hp[1]["lr"])],
    )
    assert np.all(np.abs(hp[-1] - [0.05, 0.9, 1e-2]) > 1e-6)
    np.testing.assert_allclose(losses, ref_losses, rtol=5e-6)
    np.testing.assert_allclose(hp, ref_hp, rtol=5e-6)


@pytest.mark.parametrize("same_initial_moment", [True, False])
def test_adam_tuned_by_sgd(same_initial_moment):
    eps = 1e-8
    ref_losses, ref_hp = _run_reference(
        lambda: gdtuo.Adam(
            alpha=0.01, beta1=0.9, beta2=0.99, optimizer=gdtuo.SGD(alpha=1e-4)
        ),
        lambda o: [
            o.parameters["alpha"].item(),
            gdtuo.Adam.clamp(o.parameters["beta1"]).item(),
            gdtuo.Adam.clamp(o.parameters["beta2"]).item(),
        ],
    )
    tanh01 = lambda v: ro.hyper(v, transform="tanh01")  # noqa: E731
    tower = ro.Stack(
        ro.Adam(_identity(0.01), b1=tanh01(0.9), b2=tanh01(0.99), eps=eps),
        ro.SGD(_identity(1e-4)),
    )

    losses, hp = _run_ours(
        tower,
        lambda hp: [float(hp[0]["lr"]), float(hp[0]["b1"]), float(hp[0]["b2"])],
        _start_v_at(eps, levels=1) if same_initial_moment else (lambda s: s),
    )
    assert np.all(np.abs(hp[-1] - [0.01, 0.9, 0.99]) > 1e-7)
    if same_initial_moment:
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
        np.testing.assert_allclose(hp, ref_hp, rtol=1e-5)
    else:  # v0 = eps vs 0 changes sqrt(v_hat) by ~eps / (1 - b2) at first
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-3)
        np.testing.assert_allclose(hp, ref_hp, rtol=1e-3)


def _start_v_at(eps, levels):
    """The reference starts Adam's second moment at eps (ours, like optax, at 0)."""

    def adjust(state):
        for k in range(levels):
            s = state.states[k]
            nu = jax.tree.map(lambda v: v + eps, s.nu)
            state = state.with_opt_state(k + 1, eqx.tree_at(lambda s: s.nu, s, nu))
        return state

    return adjust


def test_adam_tuned_by_adam_tuned_by_adam_float64():
    """Depth 3, every beta of levels 1 and 2 moving by more than 1e-3 relative: the
    b1/b2 hypergradients (signs, bias-correction terms, the value at which each
    column is taken) must match, not just the learning rates."""
    eps, lrs, b1, b2 = 1e-8, (0.05, 1e-2, 1e-2), 0.8, 0.95
    ref_losses, ref_hp = _run_reference(
        lambda: gdtuo.Adam(
            alpha=lrs[0],
            beta1=b1,
            beta2=b2,
            optimizer=gdtuo.Adam(
                alpha=lrs[1],
                beta1=b1,
                beta2=b2,
                optimizer=gdtuo.Adam(alpha=lrs[2], beta1=b1, beta2=b2),
            ),
        ),
        lambda o: [
            v
            for level in (o, o.optimizer)
            for v in (
                level.parameters["alpha"].item(),
                gdtuo.Adam.clamp(level.parameters["beta1"]).item(),
                gdtuo.Adam.clamp(level.parameters["beta2"]).item(),
            )
        ],
        dtype=np.float64,
    )
    tanh01 = lambda v: ro.hyper(v, transform="tanh01")  # noqa: E731
    tower = ro.Stack(
        *[ro.Adam(_identity(lr), b1=tanh01(b1), b2=tanh01(b2), eps=eps) for lr in lrs]
    )
    losses, hp = _run_ours(
        tower,
        lambda hp: [float(hp[k][n]) for k in (0, 1) for n in ("lr", "b1", "b2")],
        _start_v_at(eps, levels=3),
        dtype=np.float64,
    )
    start = np.array([lrs[0], b1, b2, lrs[1], b1, b2])
    moved = np.abs(hp[-1] - start) / start
    assert np.all(moved > 1e-3), moved
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-11)
    np.testing.assert_allclose(hp, ref_hp, rtol=1e-11)
