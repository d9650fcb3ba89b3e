"""Do towers need tuning? Default towers from any initial lr, against a grid-searched
Adam and the learning-rate-free optimisers at their defaults.

Tasks: the four of `peers.py` (digits MLP, breast-cancer logistic regression, a
character MLP, a 10-D quadratic), a small CNN on the 8x8 digit images, a
character-level recurrent network, an ill-conditioned least-squares problem
(condition 1e4, no noise), a regression MLP and a small-data classifier (wine,
120 training examples). Every method takes the same steps on the same batches
(`peers.run_grid`: one vmapped program per method over the initial lrs). Per
task: the final training loss (whole training set) of

- the default towers `Stack[2](Adam(lr))`, `Stack[3](Adam(lr))`, tied
  `Stack[3](Adam(lr), tie=True)` and `Stack[3](SGD(lr, momentum=0.9))`, over 12
  initial lrs from 1e-5 to 1, and the zero-argument `Stack[3](Adam())`;
- Adam over the same grid (its best point is "tuned Adam", what a 12-run grid
  search buys, and its median), and SGD with momentum 0.9 over it (the
  baseline of the SGD tower);
- `optax.contrib` at their defaults: prodigy, dadapt_adamw, dog,
  mechanize(adam(1e-3)), schedule_free_adamw(1e-3), cocob.

Each as a ratio to tuned Adam's loss; losses below 1e-4 count as 1e-4 (solved).
Then an ablation (what each design choice of the default bought) and the reference
paper's protocol (digits, 600 steps, batch 128, heights 2-4).

    python benchmarks/tuning_free.py [--steps 400] [--tasks all]
        [--no-ablation] [--seed 1] [--png benchmarks/tuning_free.png]
    python benchmarks/tuning_free.py --tasks heldout --no-ablation --png ""
    python benchmarks/tuning_free.py --rules --tasks all,heldout
    python benchmarks/tuning_free.py --metrics --steps 1600 --tasks all,heldout
    python benchmarks/tuning_free.py --untuned --steps 1600 --tasks all,heldout
    python benchmarks/tuning_free.py --seeds 1,2,3 --tasks all,heldout,fresh \
        --no-ablation
    python benchmarks/tuning_free.py --tasks fresh --no-ablation --png ""
    python benchmarks/tuning_free.py --tasks fresh2 --no-ablation --png ""

`--tasks attention` runs a one-block transformer on characters, a check added
after the nine (not in `all`). `--tasks heldout` runs seven more tasks added
after every default was chosen: an iris MLP, a linear regression on the diabetes
data, a logistic regression with inputs scaled from 1 to 32, a deep (six hidden
layers) ReLU MLP on digits, a digits autoencoder, a matrix factorisation started
near its saddle, and a noisy quadratic with batches of 8. `--tasks probes` runs
six kinds added after those (Rosenbrock's function, digits with 20% of the
labels noise, a full-batch digits MLP, a teacher-student ReLU network, an L1
regression, the digits MLP on batches of 4), to look for failures of new kinds.
`--tasks fresh` runs five written after all of those and used for no choice, to
measure the defaults out of sample (a sine regression, softmax regression on 50
classes, a ReLU MLP on two moons, a Poisson regression, a LayerNorm-GELU MLP on
digits). `--tasks fresh2` runs four written later still, before any tower ran on
them (a deep linear network near its saddle, an adding-problem RNN, a 1-D conv
net on waves, a bag-of-embeddings classifier). `--tasks fresh3` runs four
written after every default was chosen (a residual MLP, a multi-label MLP, a
sine-activation network on a 2-D field, a wide ReLU MLP), `--tasks fresh4` four
of new kinds (a VAE, a dropout MLP, a GRU, a Huber regression on heavy-tailed
noise). `--tasks fresh5` four more of new kinds, written on 2026-12-05 (a
physics-informed ODE, whose loss goes through the network's second derivative; a
contrastive InfoNCE encoder; a pairwise ranking loss; two heads on one trunk
whose losses differ in gradient scale). `--tasks fresh6` four more, written
later that day before any run (a REINFORCE contextual bandit, a Gaussian
likelihood with a learned variance, one layer applied 12 times with shared
weights, skip-gram embeddings with negative sampling). `--tasks fresh7` four
more, written on 2026-12-05 (fourth session) before any run (a CNN written with
Equinox modules, an MLP written with Flax NNX on Friedman's regression problem,
a RealNVP flow on two moons, an MLP with bfloat16 parameters). `--tasks fresh8`
four more, written on 2026-12-06 before any run (a vision transformer on digits,
a Gaussian mixture's likelihood, a graph convolutional network on a stochastic
block model, a deep tanh MLP started too small). `--tasks fresh9` four more,
written that night before any run (a batch-normalised CNN, a char LSTM,
distillation to a teacher's soft targets, logistic regression on sparse
counts). `--tasks fresh10` four more, written on 2026-12-06 (morning) before
any run (a two-block transformer language model with RMSNorm, a digits MLP with
an L2 penalty in its loss, a sigmoid MLP, quantile regression by the pinball
loss). `--tasks fresh11` four more, written on 2026-12-06 (midday) before any
run (denoising score matching on two moons, a matrix-completion recommender
with embedding tables, a soft mixture of experts on digits, a 1-D convolutional
autoencoder). `--tasks fresh12` four more, written that afternoon before any
run (a neural ODE integrated by RK4, digits' one class in ten, an MLP-Mixer, deep
sets). `--tasks fresh13` four more, written that evening before any run (low-rank
adapters on a frozen MLP, a Cox survival MLP, a generator trained through
Sinkhorn iterations, a hypernetwork). `--tasks fresh14` four more, written later
that evening before any run (a deep-kernel Gaussian process, MAML on sines, a
MADE density on binarised digits, TransE knowledge-graph embeddings under a
margin loss). `--tasks fresh15` four more, written after those before any run
(semi-gradient TD(0) value learning, a CTC frame classifier, a sparse
autoencoder, digits with mixup). `--tasks fresh16` four more, written that
evening before any run (sparse parity, phase retrieval, an unrolled
equilibrium net, a weight-normalised MLP). `--tasks fresh17` four more, written
that night before any run (a WaveNet-style gated dilated convolution stack, a
mixture density network, a neural additive model, a soft decision tree).
`--tasks fresh18` four more, written later that night before any run (a
Kolmogorov-Arnold network, a pendulum policy trained through a rollout, a
binary-weight MLP under the straight-through estimator, ordinal regression).
`--tasks fresh19` four more, written on 2026-12-07 before any run (JAX's
tutorial MLP as a list of `(w, b)` tuples, a radial-basis network, a tabular
model with embedding tables, a character model with tied embeddings).
`--tasks fresh20` four more, written after those before any run (a feature-grid
image field, a simulated variational quantum eigensolver, a SwiGLU residual
MLP, a Duffing oscillator's constants identified through a rollout).
`--tasks fresh21` four more, written in a new session before any run (a
linear-chain CRF tagger, a neural cellular automaton, a CLIP-style two-tower
model with a learned temperature, a CP tensor completion).
`--tasks fresh22` four more, written in the session after (a Bayesian MLP by
variational inference, a linear SVM on the hinge loss, batch-hard triplet
metric learning, a GRU encoder-decoder reversing sequences).
`--tasks fresh23` four more (2026-12-08: a diagonal linear state-space layer on
a memory task, Poincare embeddings of a tree, TV deblurring with the pixels as
parameters, a spiking network through a surrogate gradient).
`--tasks fresh24` four more (a bigram model over a Zipfian 2000-token
vocabulary, a Gumbel-softmax VAE, a Hamiltonian network, the Thomson problem).
`--tasks fresh25` four more (Gram-matrix texture synthesis, a noise-contrastive
energy model, a rotation through the matrix exponential, a text CNN).
`--tasks raw` five probes
of unnormalised targets and inputs (tanh and ReLU MLPs on diabetes' raw targets,
the two heads' regression alone, digits on raw pixels, a ReLU regression on
uncentred targets). `--rules` prints only a table of `Stack[3]` over each
level-1 rule of the catalogue (Adam and SGD with and without momentum, RMSProp,
AdaGrad) next to the best of each rule's own grid. `--seed N` draws the batches
with seed N (the tables use 1); `--seeds 1,2,3` prints only the default towers
(and, without `--no-ablation`, the ablation's rows) under each seed's batches,
with the number of targets met over every task and seed (the worst case over 12
starts moves with the batches more than with most design choices), and a table
per initial lr: where the misses are. `--row NAME` (repeatable) keeps only the
named ablation rows (or `--seeds`' default towers); with `--seeds` the table
then has those rows alone, e.g.

    python benchmarks/tuning_free.py --seeds 1,2,3 --tasks all,heldout,fresh \
        --row "default levels, upper b1 0 (no momentum)"
"""

import argparse
import dataclasses
import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import init_mlp, machine, mlp, next_to_me, pyplot, table
from jax.scipy.ndimage import map_coordinates
from peers import (
    Task,
    _accuracy,
    _ce,
    binary_logits,
    breast_cancer_task,
    char_task,
    char_windows,
    digits_task,
    next_char_task,
    quadratic_task,
    run_grid,
    standardised_split,
)

import recursive_opt as ro

LRS = np.logspace(-5, 0, 12)
SEED = 1  # of the batches; `--seed`


def run_lrs(task, make_tx, lrs, steps):
    """`peers.run_grid` on the batches of `SEED`."""
    return run_grid(task, make_tx, lrs, steps, seed=SEED)


SOLVED = 1e-4


def best_finite(loss: np.ndarray) -> float:
    """The lowest finite loss of a grid ("tuned" at its best point)."""
    return float(np.nanmin(np.where(np.isfinite(loss), loss, np.nan)))


def cnn_task():
    d = ro.load_digits()
    k1, k2, k3 = jr.split(jr.key(4), 3)
    params = {
        "c1": jr.normal(k1, (3, 3, 1, 8)) / 3.0,
        "c2": jr.normal(k2, (3, 3, 8, 16)) / jnp.sqrt(72.0),
        "out": init_mlp(k3, (4 * 4 * 16, 10))[0],
    }

    def logits(p, x):
        h = x.reshape(-1, 8, 8, 1)
        dn = ("NHWC", "HWIO", "NHWC")
        h = jnp.tanh(
            jax.lax.conv_general_dilated(h, p["c1"], (1, 1), "SAME", None, None, dn)
        )
        h = jnp.tanh(
            jax.lax.conv_general_dilated(h, p["c2"], (2, 2), "SAME", None, None, dn)
        )
        return h.reshape(h.shape[0], -1) @ p["out"]["w"] + p["out"]["b"][None]

    return Task(
        "digits CNN",
        d.train,
        d.test,
        params,
        lambda p, b: _ce(logits(p, b[0]), b[1]),
        _accuracy(logits),
        "test accuracy",
        128,
    )


def _tanh_rnn(p, xs):
    """The last hidden state of a tanh RNN (`p["wx"]`, `p["wh"]`, `p["b"]`) run
    from zeros over `xs` (batch, time, features)."""

    def cell(h, x_t):
        return jnp.tanh(x_t @ p["wx"] + h @ p["wh"] + p["b"][None]), None

    h0 = jnp.zeros((xs.shape[0], p["wh"].shape[0]), xs.dtype)
    h, _ = jax.lax.scan(cell, h0, jnp.swapaxes(xs, 0, 1))
    return h


def rnn_task(context: int = 16, hidden: int = 64, max_chars: int = 100_000):
    n, *data = char_windows(("argparse.py",), context, max_chars, stride=3)
    k1, k2, k3 = jr.split(jr.key(5), 3)
    params = {
        "embed": jr.normal(k1, (n, 16)) * 0.3,
        "wx": jr.normal(k2, (16, hidden)) / 4.0,
        "wh": jr.normal(k3, (hidden, hidden)) / jnp.sqrt(hidden),
        "b": jnp.zeros(hidden),
        "out": init_mlp(jr.key(6), (hidden, n))[0],
    }

    def logits(p, x):
        h = _tanh_rnn(p, p["embed"][x])
        return h @ p["out"]["w"] + p["out"]["b"][None]

    return next_char_task(f"char RNN ({n} symbols)", data, params, logits, 64)


def _least_squares(name: str, data: ro.Dataset, batch: int) -> Task:
    """Least squares without an intercept on `ro.make_quadratic` data."""
    loss = lambda p, b: jnp.mean((b[0] @ p["w"] - b[1]) ** 2)  # noqa: E731
    w = jnp.zeros(data.train[0].shape[1])
    return Task(name, data.train, data.test, {"w": w}, loss, loss, "test MSE", batch)


def least_squares_task():
    d = ro.make_quadratic(dim=20, n=512, condition=1e4, noise=0.0, seed=1)
    return _least_squares("ill-conditioned least squares", d, 64)


def regression_task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 8)).astype(np.float32)
    a = rng.normal(size=8).astype(np.float32)
    y = np.sin(2 * x @ a / np.sqrt(8)) + 0.5 * np.tanh(x[:, 0] * x[:, 1])
    y = (y + 0.05 * rng.normal(size=1200)).astype(np.float32)
    loss = lambda p, b: jnp.mean((mlp(p, b[0])[:, 0] - b[1]) ** 2)  # noqa: E731
    return Task(
        "regression MLP",
        (x[:1000], y[:1000]),
        (x[1000:], y[1000:]),
        init_mlp(jr.key(2), (8, 64, 64, 1)),
        loss,
        loss,
        "test MSE",
        64,
    )


def wine_task():
    from sklearn.datasets import load_wine

    train, test = standardised_split(load_wine(), 120)
    return Task(
        "small-data wine MLP",
        train,
        test,
        init_mlp(jr.key(3), (13, 32, 3)),
        lambda p, b: _ce(mlp(p, b[0]), b[1]),
        _accuracy(mlp),
        "test accuracy",
        32,
    )


def _layer_norm(h, q):
    """LayerNorm over the last axis, with gain `q["g"]` and bias `q["b"]`."""
    mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + 1e-5) * q["g"] + q["b"]


def _norm_params(d: int) -> dict:
    return {"g": jnp.ones(d), "b": jnp.zeros(d)}


def _square(key, d: int) -> jax.Array:
    """A d x d projection at the usual 1 / sqrt(d) scale."""
    return jr.normal(key, (d, d)) / jnp.sqrt(d)


def attention_task(context: int = 16, d: int = 32):
    """A one-block causal transformer (pre-LayerNorm, one head, GELU MLP) predicting
    the next character of `textwrap.py`: a held-out check, not in `--tasks all`."""
    n, *data = char_windows(("textwrap.py",), context, 60_000, stride=2)
    ks = jr.split(jr.key(7), 8)
    square = functools.partial(_square, d=d)
    params = {
        "embed": jr.normal(ks[0], (n, d)) * 0.3,
        "pos": jr.normal(ks[1], (context, d)) * 0.1,
        "wq": square(ks[2]),
        "wk": square(ks[3]),
        "wv": square(ks[4]),
        "wo": square(ks[5]),
        "ln1": _norm_params(d),
        "ln2": _norm_params(d),
        "ff": init_mlp(ks[6], (d, 64, d)),
        "out": init_mlp(ks[7], (d, n))[0],
    }
    causal = jnp.tril(jnp.ones((context, context), bool))[None]

    def logits(p, x):
        h = p["embed"][x] + p["pos"][None]
        a = _layer_norm(h, p["ln1"])
        q, k, v = a @ p["wq"], a @ p["wk"], a @ p["wv"]
        s = jnp.where(causal, jnp.einsum("btd,bsd->bts", q, k) / jnp.sqrt(d), -1e9)
        h = h + jax.nn.softmax(s, -1) @ v @ p["wo"]
        (l1, l2), f = p["ff"], _layer_norm(h, p["ln2"])
        h = h + jax.nn.gelu(f @ l1["w"] + l1["b"]) @ l2["w"] + l2["b"]
        return h[:, -1] @ p["out"]["w"] + p["out"]["b"]

    return next_char_task(f"char attention ({n} symbols)", data, params, logits, 64)


def iris_task():
    from sklearn.datasets import load_iris

    train, test = standardised_split(load_iris(), 100)
    loss = lambda p, b: _ce(mlp(p, b[0]), b[1])  # noqa: E731
    return Task(
        "iris MLP",
        train,
        test,
        init_mlp(jr.key(11), (4, 16, 3)),
        loss,
        _accuracy(mlp),
        "test accuracy",
        16,
    )


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    """Diabetes' inputs and targets, both standardised (float32)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x, y = data.data.astype(np.float32), data.target.astype(np.float32)
    return (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()


def diabetes_task():
    x, y = _diabetes()
    loss = lambda p, b: jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)  # noqa: E731
    return Task(
        "diabetes linear regression",
        (x[:350], y[:350]),
        (x[350:], y[350:]),
        {"w": jnp.zeros(10), "b": jnp.zeros([])},
        loss,
        loss,
        "test MSE",
        32,
    )


def scaled_logistic_task():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2400, 50)) * np.logspace(0, 1.5, 50)  # scales 1 to 32
    w = rng.normal(size=50) / 10
    y = (x @ w + rng.normal(size=2400) > 0).astype(np.int32)
    x = x.astype(np.float32)
    return Task(
        "badly scaled logistic",
        (x[:2000], y[:2000]),
        (x[2000:], y[2000:]),
        {"w": jnp.zeros(50), "b": jnp.zeros([])},
        lambda p, b: _ce(binary_logits(p, b[0]), b[1]),
        _accuracy(binary_logits),
        "test accuracy",
        64,
    )


def deep_relu_task():
    d = ro.load_digits()
    relu_mlp = functools.partial(mlp, activation=jax.nn.relu)
    return Task(
        "deep ReLU MLP",
        d.train,
        d.test,
        init_mlp(jr.key(12), (64,) + (64,) * 6 + (10,)),
        lambda p, b: _ce(relu_mlp(p, b[0]), b[1]),
        _accuracy(relu_mlp),
        "test accuracy",
        64,
    )


def autoencoder_task():
    d = ro.load_digits()
    x, xt = d.train[0], d.test[0]
    loss = lambda p, b: jnp.mean((mlp(p, b[0]) - b[0]) ** 2)  # noqa: E731
    return Task(
        "digits autoencoder",
        (x, x),
        (xt, xt),
        init_mlp(jr.key(13), (64, 32, 8, 32, 64)),
        loss,
        loss,
        "test MSE",
        64,
    )


def factorisation_task():
    """Completing a rank-4 60x50 matrix from 2400 of its entries, with rank-8
    factors started small (near the saddle at zero)."""
    rng = np.random.default_rng(7)
    m = (rng.normal(size=(60, 4)) @ rng.normal(size=(4, 50))).astype(np.float32)
    order = rng.permutation(m.size)[:3000]
    ij = np.stack(np.unravel_index(order, m.shape), 1).astype(np.int32)
    values = m.reshape(-1)[order]
    k1, k2 = jr.split(jr.key(14))
    params = {"u": jr.normal(k1, (60, 8)) * 0.1, "v": jr.normal(k2, (8, 50)) * 0.1}

    def loss(p, b):
        i, j = b[0][:, 0], b[0][:, 1]
        return jnp.mean((jnp.sum(p["u"][i] * p["v"][:, j].T, -1) - b[1]) ** 2)

    return Task(
        "matrix factorisation",
        (ij[:2400], values[:2400]),
        (ij[2400:], values[2400:]),
        params,
        loss,
        loss,
        "test MSE",
        128,
    )


def noisy_quadratic_task():
    d = ro.make_quadratic(dim=30, n=2048, condition=1000.0, noise=1.0, seed=3)
    return _least_squares("noisy quadratic, batch 8", d, 8)


def _no_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A data set of `n` zeros for a task whose loss reads no batch (a
    deterministic objective): the harness still draws batches from it."""
    return np.zeros((n, 1), np.float32), np.zeros(n, np.float32)


def rosenbrock_task():
    """Rosenbrock's function from (-1.5, 2): no data, no noise, a curved valley."""
    dummy = _no_data(256)

    def loss(p, b):
        x, y = p["xy"][0], p["xy"][1]
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    params = {"xy": jnp.array([-1.5, 2.0])}
    return Task("Rosenbrock", dummy, dummy, params, loss, loss, "loss", 1)


def label_noise_task():
    """The digits MLP with a fifth of the training labels replaced at random."""
    d = ro.load_digits()
    x, y = d.train
    rng = np.random.default_rng(5)
    y = np.array(y)
    flip = rng.random(len(y)) < 0.2
    y[flip] = rng.integers(0, 10, flip.sum())
    loss = lambda p, b: _ce(mlp(p, b[0]), b[1])  # noqa: E731
    params = init_mlp(jr.key(21), (64, 128, 10))
    return Task(
        "digits, 20% label noise", (x, y), d.test, params, loss, _accuracy(mlp),
        "test accuracy", 32,
    )  # fmt: skip


def full_batch_task():
    """A digits MLP on batches as large as the training set (little noise)."""
    d = ro.load_digits()
    loss = lambda p, b: _ce(mlp(p, b[0]), b[1])  # noqa: E731
    params = init_mlp(jr.key(22), (64, 32, 10))
    return Task(
        "digits, full batch", d.train, d.test, params, loss, _accuracy(mlp),
        "test accuracy", len(d.train[0]),
    )  # fmt: skip


def teacher_student_task():
    """A 20-64-1 ReLU network fitting a random 20-16-1 ReLU network's outputs."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2048, 20)).astype(np.float32)
    relu_mlp = functools.partial(mlp, activation=jax.nn.relu)
    y = np.asarray(relu_mlp(init_mlp(jr.key(30), (20, 16, 1)), x))[:, 0]
    loss = lambda p, b: jnp.mean((relu_mlp(p, b[0])[:, 0] - b[1]) ** 2)  # noqa: E731
    params = init_mlp(jr.key(31), (20, 64, 1))
    return Task(
        "teacher-student ReLU", (x[:1600], y[:1600]), (x[1600:], y[1600:]),
        params, loss, loss, "test MSE", 32,
    )  # fmt: skip


def l1_regression_task():
    """Least absolute deviations on inputs scaled 1 to 32, heavy-tailed noise."""
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(1000, 10)) * np.logspace(0, 1.5, 10)).astype(np.float32)
    y = (x @ rng.normal(size=10) + rng.standard_t(2, size=1000)).astype(np.float32)
    loss = lambda p, b: jnp.mean(jnp.abs(b[0] @ p["w"] + p["b"] - b[1]))  # noqa: E731
    params = {"w": jnp.zeros(10), "b": jnp.zeros([])}
    return Task(
        "L1 regression", (x[:800], y[:800]), (x[800:], y[800:]), params, loss,
        loss, "test MAE", 64,
    )  # fmt: skip


def small_batch_task():
    """The digits MLP of `peers.py` on batches of 4 (noisy gradients: where the
    one-step hypergradient's bias to low lrs is strongest, Wu et al. 2018)."""
    return dataclasses.replace(digits_task(), name="digits, batch 4", batch=4)


def sine_task():
    """A 1-64-64-1 tanh network fitting sin(2x) + 0.3x with a little noise."""
    rng = np.random.default_rng(11)
    x = rng.uniform(-3, 3, (1200, 1)).astype(np.float32)
    y = (np.sin(2 * x) + 0.3 * x + 0.05 * rng.normal(size=x.shape)).astype(np.float32)
    params = init_mlp(jr.key(21), (1, 64, 64, 1))
    loss = lambda p, b: jnp.mean((mlp(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "sine regression", (x[:1000], y[:1000]), (x[1000:], y[1000:]), params,
        loss, loss, "test MSE", 32,
    )  # fmt: skip


def softmax_task():
    """Softmax regression, 50 overlapping Gaussian classes in 20 dimensions."""
    d = ro.make_gaussian_mixture(dim=20, classes=50, n=4000, seed=5)
    linear = lambda p, x: x @ p["w"] + p["b"]  # noqa: E731
    return Task(
        "softmax, 50 classes", d.train, d.test,
        {"w": jnp.zeros((20, 50)), "b": jnp.zeros(50)},
        lambda p, b: _ce(linear(p, b[0]), b[1]), _accuracy(linear),
        "test accuracy", 128,
    )  # fmt: skip


def moons_task():
    """A 2-32-32-2 ReLU network on scikit-learn's two moons, batches of 16."""
    from sklearn.datasets import make_moons

    x, y = make_moons(600, noise=0.2, random_state=3)
    x, y = x.astype(np.float32), y.astype(np.int32)
    relu_mlp = functools.partial(mlp, activation=jax.nn.relu)
    return Task(
        "two moons ReLU MLP", (x[:400], y[:400]), (x[400:], y[400:]),
        init_mlp(jr.key(5), (2, 32, 32, 2)),
        lambda p, b: _ce(relu_mlp(p, b[0]), b[1]), _accuracy(relu_mlp),
        "test accuracy", 16,
    )  # fmt: skip


def poisson_task():
    """Poisson regression (log link) on 10 Gaussian inputs."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2000, 10)).astype(np.float32)
    y = rng.poisson(np.exp(x @ (0.3 * rng.normal(size=10)) + 0.5)).astype(np.float32)

    def loss(p, b):
        z = b[0] @ p["w"] + p["b"]
        return jnp.mean(jnp.exp(z) - b[1] * z)

    return Task(
        "Poisson regression", (x[:1600], y[:1600]), (x[1600:], y[1600:]),
        {"w": jnp.zeros(10), "b": jnp.zeros([])}, loss, loss, "test NLL", 64,
    )  # fmt: skip


def layernorm_task():
    """A 64-96-96-10 MLP on digits with LayerNorm (gain only) and GELU."""
    d = ro.load_digits()
    params = {"layers": init_mlp(jr.key(9), (64, 96, 96, 10))}
    params["gains"] = [jnp.ones(96), jnp.ones(96)]

    def net(p, x):
        for layer, gain in zip(p["layers"][:-1], p["gains"]):
            h = x @ layer["w"] + layer["b"]
            h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(
                h.var(-1, keepdims=True) + 1e-5
            )
            x = jax.nn.gelu(h * gain)
        return x @ p["layers"][-1]["w"] + p["layers"][-1]["b"]

    return Task(
        "digits LayerNorm-GELU MLP", d.train, d.test, params,
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net), "test accuracy", 64,
    )  # fmt: skip


def deep_linear_task():
    """A four-layer linear network (20-32-32-32-5, no activations) fitting a
    random linear map plus noise (sd 0.1), started at 0.15x the usual scale
    (near its saddle at zero)."""
    rng = np.random.default_rng(31)
    x = rng.normal(size=(1500, 20)).astype(np.float32)
    y = x @ rng.normal(size=(20, 5)) / np.sqrt(20) + 0.1 * rng.normal(size=(1500, 5))
    y = y.astype(np.float32)
    layers = init_mlp(jr.key(33), (20, 32, 32, 32, 5))
    params = [{"w": 0.15 * layer["w"], "b": layer["b"]} for layer in layers]
    linear = functools.partial(mlp, activation=lambda h: h)
    loss = lambda p, b: jnp.mean((linear(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "deep linear network", (x[:1200], y[:1200]), (x[1200:], y[1200:]),
        params, loss, loss, "test MSE", 64,
    )  # fmt: skip


def adding_task(length: int = 20, hidden: int = 32):
    """A tanh RNN on the adding problem: a sequence of (value, marker) pairs,
    the target the sum of the two marked values."""
    rng = np.random.default_rng(41)
    n = 2400
    values = rng.uniform(0, 1, (n, length)).astype(np.float32)
    marks = np.zeros((n, length), np.float32)
    for i in range(n):
        marks[i, rng.choice(length, 2, replace=False)] = 1.0
    x = np.stack([values, marks], -1)
    y = (values * marks).sum(1, keepdims=True).astype(np.float32)
    k1, k2, k3 = jr.split(jr.key(43), 3)
    params = {
        "wx": jr.normal(k1, (2, hidden)) / np.sqrt(2),
        "wh": jr.normal(k2, (hidden, hidden)) / np.sqrt(hidden),
        "b": jnp.zeros(hidden),
        "wo": jr.normal(k3, (hidden, 1)) / np.sqrt(hidden),
        "bo": jnp.zeros(1),
    }

    def predict(p, xs):
        return _tanh_rnn(p, xs) @ p["wo"] + p["bo"]

    loss = lambda p, b: jnp.mean((predict(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "adding-problem RNN", (x[:2000], y[:2000]), (x[2000:], y[2000:]), params,
        loss, loss, "test MSE", 32,
    )  # fmt: skip


def conv1d_task(length: int = 64):
    """A 1-D conv net (two conv layers, 8 and 16 channels, global mean pool)
    telling noisy sine, square and sawtooth waves of random frequency apart."""
    rng = np.random.default_rng(51)
    n = 1800
    t = np.arange(length) / length
    freq = rng.uniform(2, 6, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    arg = 2 * np.pi * freq * t + phase
    kind = rng.integers(0, 3, n)
    waves = np.stack(
        [np.sin(arg), np.sign(np.sin(arg)), 2 * ((arg / (2 * np.pi)) % 1) - 1], 1
    )[np.arange(n), kind]
    x = (waves + 0.5 * rng.normal(size=waves.shape)).astype(np.float32)[..., None]
    y = kind.astype(np.int32)
    k1, k2, k3 = jr.split(jr.key(53), 3)
    params = {
        "c1": jr.normal(k1, (5, 1, 8)) / np.sqrt(5),
        "b1": jnp.zeros(8),
        "c2": jr.normal(k2, (5, 8, 16)) / np.sqrt(40),
        "b2": jnp.zeros(16),
        "w": jr.normal(k3, (16, 3)) / 4.0,
        "b": jnp.zeros(3),
    }

    def net(p, xs):
        conv = functools.partial(
            jax.lax.conv_general_dilated,
            window_strides=(1,),
            padding="SAME",
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
        h = jax.nn.relu(conv(xs, p["c1"]) + p["b1"])
        h = jax.nn.relu(conv(h, p["c2"]) + p["b2"])
        return h.mean(1) @ p["w"] + p["b"]

    return Task(
        "1-D conv net on waves", (x[:1500], y[:1500]), (x[1500:], y[1500:]),
        params, lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net),
        "test accuracy", 32,
    )  # fmt: skip


def bag_of_words_task(vocab: int = 500, length: int = 12, dim: int = 16):
    """Bag-of-embeddings text classification: token sequences drawn from one of
    four topic distributions over 500 tokens, an embedding table (sparse
    gradients), mean pooling and a linear layer."""
    rng = np.random.default_rng(61)
    topics = rng.dirichlet(np.full(vocab, 0.05), 4)
    n = 2400
    y = rng.integers(0, 4, n)
    mixed = 0.5 * topics[y] + 0.5 / vocab  # half the tokens carry no topic
    x = np.stack([rng.choice(vocab, length, p=q) for q in mixed]).astype(np.int32)
    k1, k2 = jr.split(jr.key(63))
    params = {
        "emb": jr.normal(k1, (vocab, dim)),
        "w": jr.normal(k2, (dim, 4)) / 4.0,
        "b": jnp.zeros(4),
    }
    net = lambda p, xs: p["emb"][xs].mean(1) @ p["w"] + p["b"]  # noqa: E731
    return Task(
        "bag-of-embeddings topics", (x[:2000], y[:2000].astype(np.int32)),
        (x[2000:], y[2000:].astype(np.int32)), params,
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net), "test accuracy", 32,
    )  # fmt: skip


def residual_task(blocks: int = 8, width: int = 64):
    """A residual ReLU MLP on digits: a 64-64 input layer, eight blocks x + W2
    relu(W1 x) / 8 (no normalisation) and a 64-10 head."""
    d = ro.load_digits()
    keys = jr.split(jr.key(71), 2 * blocks + 2)
    scale = 1 / np.sqrt(width)
    params = {
        "inp": init_mlp(keys[0], (64, width))[0],
        "blocks": [
            {
                "w1": jr.normal(keys[2 * i + 1], (width, width)) * scale,
                "b1": jnp.zeros(width),
                "w2": jr.normal(keys[2 * i + 2], (width, width)) * scale,
            }
            for i in range(blocks)
        ],
        "out": init_mlp(keys[-1], (width, 10))[0],
    }

    def net(p, x):
        h = x @ p["inp"]["w"] + p["inp"]["b"]
        for b in p["blocks"]:
            h = h + jax.nn.relu(h @ b["w1"] + b["b1"]) @ b["w2"] / blocks
        return h @ p["out"]["w"] + p["out"]["b"]

    return Task(
        "residual ReLU MLP", d.train, d.test, params,
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net), "test accuracy", 64,
    )  # fmt: skip


def multilabel_task(labels: int = 16):
    """Multi-label classification: 16 binary labels of 30 Gaussian inputs, drawn
    from a random two-layer teacher, fitted by a 30-64-16 tanh MLP with a sigmoid
    cross-entropy per label."""
    rng = np.random.default_rng(81)
    x = rng.normal(size=(2400, 30)).astype(np.float32)
    hidden = np.tanh(x @ rng.normal(size=(30, 20)) / np.sqrt(30))
    logits = 2.0 * hidden @ rng.normal(size=(20, labels)) / np.sqrt(20)
    y = (rng.uniform(size=logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    params = init_mlp(jr.key(83), (30, 64, labels))
    loss = lambda p, b: optax.sigmoid_binary_cross_entropy(mlp(p, b[0]), b[1]).mean()  # noqa: E731
    return Task(
        "multi-label MLP", (x[:2000], y[:2000]), (x[2000:], y[2000:]), params,
        loss, loss, "test loss", 64,
    )  # fmt: skip


def siren_task(width: int = 64):
    """A 2-64-64-1 network with sine activations (first layer's inputs scaled
    by 6) fitting an image-like function of two coordinates."""
    rng = np.random.default_rng(91)
    x = rng.uniform(-1, 1, (3000, 2)).astype(np.float32)
    y = np.sin(4 * x[:, :1]) * np.cos(3 * x[:, 1:]) + 0.5 * np.sin(
        7 * x[:, :1] * x[:, 1:]
    )
    y = y.astype(np.float32)
    params = init_mlp(jr.key(93), (2, width, width, 1))

    def net(p, xs):
        h = jnp.sin(6 * (xs @ p[0]["w"]) + p[0]["b"])
        h = jnp.sin(h @ p[1]["w"] + p[1]["b"])
        return h @ p[2]["w"] + p[2]["b"]

    loss = lambda p, b: jnp.mean((net(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "sine-activation field", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        params, loss, loss, "test MSE", 64,
    )  # fmt: skip


def wide_task(width: int = 1024):
    """A 64-1024-10 ReLU MLP on digits: one wide hidden layer."""
    d = ro.load_digits()
    relu_mlp = functools.partial(mlp, activation=jax.nn.relu)
    return Task(
        "wide ReLU MLP", d.train, d.test, init_mlp(jr.key(97), (64, width, 10)),
        lambda p, b: _ce(relu_mlp(p, b[0]), b[1]), _accuracy(relu_mlp),
        "test accuracy", 32,
    )  # fmt: skip


def _key_of(x) -> jax.Array:
    """A PRNG key drawn from a batch's inputs: a stochastic objective's noise,
    the same for every method given the same batch."""
    return jr.fold_in(jr.key(0), jnp.sum(x * 1e3).astype(jnp.int32))


def vae_task(latent: int = 8, hidden: int = 64):
    """A variational autoencoder on digits (64-64-2x8 encoder, 8-64-64 decoder,
    Bernoulli likelihood): the negative ELBO with the reparametrisation's noise
    drawn per batch, a stochastic objective."""
    d = ro.load_digits()
    k1, k2 = jr.split(jr.key(101))
    params = {
        "enc": init_mlp(k1, (64, hidden, 2 * latent)),
        "dec": init_mlp(k2, (latent, hidden, 64)),
    }

    def loss(p, b):
        x = b[0]
        h = mlp(p["enc"], x, activation=jax.nn.relu)
        mu, log_var = h[:, :latent], h[:, latent:]
        eps = jr.normal(_key_of(x), mu.shape)
        z = mu + jnp.exp(0.5 * log_var) * eps
        logits = mlp(p["dec"], z, activation=jax.nn.relu)
        nll = optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mu**2 - 1 - log_var, -1)
        return jnp.mean(nll + kl)

    return Task(
        "digits VAE", d.train, d.test, params, loss, loss, "test negative ELBO",
        64,
    )  # fmt: skip


def dropout_task(rate: float = 0.3):
    """A 64-128-128-10 ReLU MLP on digits with dropout (rate 0.3) on both
    hidden layers while training, its masks drawn per batch."""
    d = ro.load_digits()
    params = init_mlp(jr.key(103), (64, 128, 128, 10))

    def net(p, x, key=None):
        h = x
        for i, layer in enumerate(p[:-1]):
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
            if key is not None:
                keep = jr.bernoulli(jr.fold_in(key, i), 1 - rate, h.shape)
                h = jnp.where(keep, h / (1 - rate), 0.0)
        return h @ p[-1]["w"] + p[-1]["b"]

    return Task(
        "dropout MLP", d.train, d.test, params,
        lambda p, b: _ce(net(p, b[0], _key_of(b[0])), b[1]),
        _accuracy(net), "test accuracy", 64,
    )  # fmt: skip


def _gru_step(g, h, e):
    """One GRU step (Cho et al. 2014): `g` holds the input weights `wx`, the
    recurrent `wh` and the bias `b`, the update, reset and candidate gates side
    by side."""
    hidden = h.shape[-1]
    a, r_h = e @ g["wx"] + g["b"], h @ g["wh"]
    z = jax.nn.sigmoid(a[:, :hidden] + r_h[:, :hidden])
    r = jax.nn.sigmoid(a[:, hidden : 2 * hidden] + r_h[:, hidden : 2 * hidden])
    c = jnp.tanh(a[:, 2 * hidden :] + r * r_h[:, 2 * hidden :])
    return (1 - z) * h + z * c


def gru_task(length: int = 20, tokens: int = 4, hidden: int = 32):
    """A GRU classifier: which of 4 tokens is most frequent in a sequence of 20
    (ties to the lowest), from 8-dimensional embeddings."""
    rng = np.random.default_rng(107)
    n = 2400
    x = rng.integers(0, tokens, (n, length)).astype(np.int32)
    counts = (x[..., None] == np.arange(tokens)).sum(1)
    y = counts.argmax(-1).astype(np.int32)
    keys = jr.split(jr.key(109), 4)
    params = {
        "embed": jr.normal(keys[0], (tokens, 8)),
        "wx": jr.normal(keys[1], (8, 3 * hidden)) / np.sqrt(8),
        "wh": jr.normal(keys[2], (hidden, 3 * hidden)) / np.sqrt(hidden),
        "b": jnp.zeros(3 * hidden),
        "out": init_mlp(keys[3], (hidden, tokens))[0],
    }

    def predict(p, xs):
        emb = jnp.swapaxes(p["embed"][xs], 0, 1)  # time first
        cell = lambda h, e: (_gru_step(p, h, e), None)  # noqa: E731
        h, _ = jax.lax.scan(cell, jnp.zeros((xs.shape[0], hidden)), emb)
        return h @ p["out"]["w"] + p["out"]["b"]

    return Task(
        "GRU majority", (x[:2000], y[:2000]), (x[2000:], y[2000:]), params,
        lambda p, b: _ce(predict(p, b[0]), b[1]), _accuracy(predict),
        "test accuracy", 64,
    )  # fmt: skip


def huber_task(features: int = 40):
    """A linear model under the Huber loss (delta 1) on data with Student-t
    noise (2 degrees of freedom: heavy tails) and correlated features."""
    rng = np.random.default_rng(113)
    n = 2400
    mix = rng.normal(size=(features, features)) / np.sqrt(features)
    x = (rng.normal(size=(n, features)) @ (np.eye(features) + mix)).astype(np.float32)
    w = rng.normal(size=(features, 1))
    y = (x @ w + rng.standard_t(2, size=(n, 1))).astype(np.float32)
    params = {"w": jnp.zeros((features, 1)), "b": jnp.zeros(1)}
    loss = lambda p, b: optax.huber_loss(b[0] @ p["w"] + p["b"], b[1]).mean()  # noqa: E731
    return Task(
        "Huber regression", (x[:2000], y[:2000]), (x[2000:], y[2000:]), params,
        loss, loss, "test Huber loss", 32,
    )  # fmt: skip


def pinn_task(width: int = 32):
    """A physics-informed 1-32-32-1 tanh network: u'' = -(2 pi)^2 sin(2 pi x) on
    (0, 1) with u(0) = u(1) = 0 (solution sin(2 pi x)), the residual (scaled by
    1 / (2 pi)^2) at each batch's collocation points plus the boundary terms:
    a loss through the network's second derivative in its input."""
    rng = np.random.default_rng(127)
    x = rng.uniform(0, 1, (2400, 1)).astype(np.float32)
    y = np.sin(2 * np.pi * x).astype(np.float32)
    params = init_mlp(jr.key(131), (1, width, width, 1))
    u = lambda p, s: mlp(p, s[None, None])[0, 0]  # noqa: E731
    u_xx = jax.vmap(jax.grad(jax.grad(u, 1), 1), (None, 0))
    k = (2 * np.pi) ** 2

    def loss(p, b):
        s = b[0][:, 0]
        residual = (u_xx(p, s) + k * jnp.sin(2 * np.pi * s)) / k
        edges = mlp(p, jnp.array([[0.0], [1.0]]))
        return jnp.mean(residual**2) + jnp.sum(edges**2)

    return Task(
        "physics-informed ODE", (x[:2000], y[:2000]), (x[2000:], y[2000:]),
        params, loss, lambda p, b: jnp.mean((mlp(p, b[0]) - b[1]) ** 2),
        "test MSE to the solution", 64,
    )  # fmt: skip


def contrastive_task(dim: int = 16, temperature: float = 0.2):
    """A 64-128-16 ReLU encoder on digits trained with InfoNCE (symmetric,
    temperature 0.2) between two noisy views of each image (Gaussian noise, sd
    0.2, drawn per batch): a loss over the pairs within a batch."""
    d = ro.load_digits()
    params = init_mlp(jr.key(137), (64, 128, dim))
    relu_mlp = functools.partial(mlp, activation=jax.nn.relu)
    unit = lambda z: z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-6)  # noqa: E731

    def info_nce(p, x):
        k1, k2 = jr.split(_key_of(x))
        views = [x + 0.2 * jr.normal(k, x.shape) for k in (k1, k2)]
        a, c = (unit(relu_mlp(p, v)) for v in views)
        logits = a @ c.T / temperature
        labels = jnp.arange(len(x))
        return (_ce(logits, labels) + _ce(logits.T, labels)) / 2

    return Task(
        "contrastive encoder", d.train, d.test, params,
        lambda p, b: info_nce(p, b[0]), lambda p, b: info_nce(p, b[0]),
        "test InfoNCE", 64,
    )  # fmt: skip


def ranking_task(features: int = 20):
    """A pairwise ranking (RankNet) loss: a 20-32-1 tanh scorer applied to both
    items of a pair, logistic loss on which ranks higher under a hidden
    nonlinear utility with noise; the metric is the test pairs' accuracy."""
    rng = np.random.default_rng(139)
    n = 3000
    a, b = (rng.normal(size=(n, features)) for _ in range(2))
    w = rng.normal(size=features) / np.sqrt(features)
    util = lambda z: np.tanh(z @ w) + 0.3 * np.sin(2 * z[:, 0])  # noqa: E731
    y = (util(a) - util(b) + 0.1 * rng.normal(size=n) > 0).astype(np.float32)
    x = np.concatenate([a, b], 1).astype(np.float32)
    params = init_mlp(jr.key(149), (features, 32, 1))

    def margin(p, x):
        return (mlp(p, x[:, :features]) - mlp(p, x[:, features:]))[:, 0]

    return Task(
        "pairwise ranking", (x[:2500], y[:2500]), (x[2500:], y[2500:]), params,
        lambda p, b: optax.sigmoid_binary_cross_entropy(margin(p, b[0]), b[1]).mean(),
        lambda p, b: jnp.mean((margin(p, b[0]) > 0) == (b[1] > 0.5)),
        "test pair accuracy", 64,
    )  # fmt: skip


def _row_sums(x):
    """The eight row sums of the digits images' pixel values 0..16 (up to ~100)."""
    return 16 * x.reshape(-1, 8, 8).sum(-1)


def multitask_task(hidden: int = 64):
    """A shared 64-64 tanh trunk on digits with two heads: the class (cross
    entropy) and the image's eight row sums of pixel values in 0..16 (mean
    squared error, targets up to about 100): two losses of very different
    gradient scales through one trunk."""
    d = ro.load_digits()

    def targets(data):
        x, labels = data
        return x, np.concatenate([labels[:, None], _row_sums(x)], 1).astype(np.float32)

    keys = jr.split(jr.key(151), 3)
    params = {
        "trunk": init_mlp(keys[0], (64, hidden))[0],
        "cls": init_mlp(keys[1], (hidden, 10))[0],
        "reg": init_mlp(keys[2], (hidden, 8))[0],
    }

    def heads(p, x):
        h = jnp.tanh(x @ p["trunk"]["w"] + p["trunk"]["b"])
        return h @ p["cls"]["w"] + p["cls"]["b"], h @ p["reg"]["w"] + p["reg"]["b"]

    def loss(p, b):
        logits, sums = heads(p, b[0])
        labels = b[1][:, 0].astype(jnp.int32)
        return _ce(logits, labels) + jnp.mean((sums - b[1][:, 1:]) ** 2)

    return Task(
        "multi-task digits", targets(d.train), targets(d.test), params, loss,
        lambda p, b: jnp.mean(
            jnp.argmax(heads(p, b[0])[0], -1) == b[1][:, 0].astype(jnp.int32)
        ),
        "test accuracy", 64,
    )  # fmt: skip


def _raw_diabetes_task(activation, name: str):
    """A 10-64-64-1 MLP on diabetes' standardised features and raw targets
    (25-346, mean 152): targets not normalised."""

    def make():
        from sklearn.datasets import load_diabetes

        data = load_diabetes()
        x, y = data.data.astype(np.float32), data.target.astype(np.float32)[:, None]
        x = (x - x.mean(0)) / x.std(0)
        loss = lambda p, b: jnp.mean((mlp(p, b[0], activation) - b[1]) ** 2)  # noqa: E731
        return Task(
            name, (x[:350], y[:350]), (x[350:], y[350:]),
            init_mlp(jr.key(3), (10, 64, 64, 1)), loss, loss, "test MSE", 32,
        )  # fmt: skip

    return make


def row_sums_task():
    """The two heads' regression alone: a 64-64-8 tanh MLP on digits fitting the
    eight row sums of 0..16 pixel values (targets up to about 100)."""
    d = ro.load_digits()

    def targets(data):
        return data[0], _row_sums(data[0]).astype(np.float32)

    loss = lambda p, b: jnp.mean((mlp(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "row sums, tanh", targets(d.train), targets(d.test),
        init_mlp(jr.key(4), (64, 64, 8)), loss, loss, "test MSE", 64,
    )  # fmt: skip


def raw_pixels_task():
    """The digits MLP on raw pixel values 0..16 (inputs not normalised)."""
    d = ro.load_digits()
    scaled = lambda data: (16 * data[0], data[1])  # noqa: E731
    loss = lambda p, b: _ce(mlp(p, b[0]), b[1])  # noqa: E731
    return Task(
        "digits, raw pixels", scaled(d.train), scaled(d.test),
        init_mlp(jr.key(0), (64, 128, 10)), loss, _accuracy(mlp), "test accuracy", 128,
    )  # fmt: skip


def offset_task():
    """A 4-64-64-1 ReLU MLP fitting 200 + 80 sin(a . x) + 20 x_1^2 (targets
    about 100-400, not centred)."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, (1200, 4)).astype(np.float32)
    y = 200 + 80 * np.sin(x @ np.array([1.0, -0.5, 0.7, 0.3])) + 20 * x[:, :1] ** 2
    y = (y + 5 * rng.normal(size=(1200, 1))).astype(np.float32)
    f = lambda p, x: mlp(p, x, jax.nn.relu)  # noqa: E731
    loss = lambda p, b: jnp.mean((f(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "offset regression, ReLU", (x[:1000], y[:1000]), (x[1000:], y[1000:]),
        init_mlp(jr.key(5), (4, 64, 64, 1)), loss, loss, "test MSE", 32,
    )  # fmt: skip


def bandit_task(arms: int = 6, features: int = 8):
    """A softmax policy (8-32-6 tanh MLP) on a contextual bandit, trained by
    REINFORCE: the loss's value is the policy's exact expected regret, its
    gradient the score-function estimate from one action per context sampled
    per batch (with the batch's mean regret as baseline, which includes each
    sample's own: biased by about 1/64): noisy gradients of a smooth
    objective."""
    rng = np.random.default_rng(151)
    n = 3000
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = rng.normal(size=(features, arms)) / np.sqrt(features)
    reward = np.tanh(x @ w) + 0.5 * np.sin(x[:, :1] * np.arange(1, arms + 1))
    regret = (reward.max(1, keepdims=True) - reward).astype(np.float32)
    params = init_mlp(jr.key(157), (features, 32, arms))

    def expected(logp, regrets):  # the policy's exact expected regret
        return jnp.mean(jnp.sum(jnp.exp(logp) * regrets, -1))

    def loss(p, b):
        logp = jax.nn.log_softmax(mlp(p, b[0]))
        arm = jr.categorical(_key_of(b[0]), logp)
        r = jnp.take_along_axis(b[1], arm[:, None], 1)[:, 0]
        score = jnp.take_along_axis(logp, arm[:, None], 1)[:, 0]
        surrogate = jnp.mean(score * jax.lax.stop_gradient(r - jnp.mean(r)))
        value = jax.lax.stop_gradient(expected(logp, b[1]))
        return value + surrogate - jax.lax.stop_gradient(surrogate)

    def exact(p, b):
        return expected(jax.nn.log_softmax(mlp(p, b[0])), b[1])

    return Task(
        "REINFORCE bandit", (x[:2500], regret[:2500]), (x[2500:], regret[2500:]),
        params, loss, exact, "test expected regret", 64,
    )  # fmt: skip


def heteroscedastic_task():
    """A 1-32-32-2 tanh MLP predicting a mean and a log-variance, trained by
    the Gaussian negative log-likelihood on y = x sin(3x) + noise of standard
    deviation 0.3 + 0.5 x^2 (x in [-1.5, 1.5]): a learned variance, whose
    gradients scale with 1 / sigma^2."""
    rng = np.random.default_rng(163)
    n = 3000
    x = rng.uniform(-1.5, 1.5, (n, 1)).astype(np.float32)
    y = x * np.sin(3 * x) + (0.3 + 0.5 * x**2) * rng.normal(size=(n, 1))
    y = y.astype(np.float32)
    params = init_mlp(jr.key(167), (1, 32, 32, 2))

    def nll(p, b):
        out = mlp(p, b[0])
        mean, log_var = out[:, :1], out[:, 1:]
        return jnp.mean(
            0.5 * (log_var + (b[1] - mean) ** 2 * jnp.exp(-log_var) + np.log(2 * np.pi))
        )

    return Task(
        "heteroscedastic NLL", (x[:2500], y[:2500]), (x[2500:], y[2500:]), params,
        nll, nll, "test NLL", 64,
    )  # fmt: skip


def tied_depth_task(iterations: int = 12, hidden: int = 64):
    """One 64-unit tanh layer applied 12 times with the image injected at each
    (z <- tanh(W z + U x + b), weights shared across depth, as in a deep
    equilibrium model unrolled), then a linear read-out, on digits."""
    d = ro.load_digits()
    k1, k2, k3 = jr.split(jr.key(173), 3)
    params = {
        "u": jr.normal(k1, (64, hidden)) / 8.0,
        "w": 0.9 * jr.orthogonal(k2, hidden),
        "b": jnp.zeros(hidden),
        "out": init_mlp(k3, (hidden, 10))[0],
    }

    def net(p, x):
        inject = x @ p["u"] + p["b"]
        z = jnp.zeros((len(x), hidden))
        for _ in range(iterations):
            z = jnp.tanh(z @ p["w"] + inject)
        return z @ p["out"]["w"] + p["out"]["b"]

    return Task(
        "weight-tied depth", d.train, d.test, params,
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net), "test accuracy", 64,
    )  # fmt: skip


def skipgram_task(tokens: int = 200, dim: int = 16, negatives: int = 5):
    """Skip-gram with negative sampling: two 200 x 16 embedding tables (small
    random init) fit (centre, context) pairs from a sparse random Markov chain
    over 200 tokens, 5 negatives per pair drawn uniformly per batch. Each batch
    touches few rows: sparse gradients through a bilinear score."""
    rng = np.random.default_rng(179)
    nxt = np.stack([rng.choice(tokens, 4, replace=False) for _ in range(tokens)])
    seq = [0]
    for _ in range(6000):
        seq.append(int(nxt[seq[-1], rng.integers(4)]))
    seq = np.array(seq)
    pairs = np.concatenate([np.stack([seq[:-k], seq[k:]], 1) for k in (1, 2)])
    pairs = pairs[rng.permutation(len(pairs))].astype(np.int32)
    k1, k2 = jr.split(jr.key(181))
    params = {
        "centre": 0.1 * jr.normal(k1, (tokens, dim)),
        "context": 0.1 * jr.normal(k2, (tokens, dim)),
    }

    def loss(p, b):
        c, o = p["centre"][b[0][:, 0]], p["context"][b[0][:, 1]]
        neg = jr.randint(_key_of(b[0]), (len(c), negatives), 0, tokens)
        pos = jax.nn.log_sigmoid(jnp.sum(c * o, -1))
        negs = jax.nn.log_sigmoid(-jnp.einsum("bd,bkd->bk", c, p["context"][neg]))
        return -jnp.mean(pos + jnp.sum(negs, -1))

    split = len(pairs) - 1000
    empty = np.zeros(len(pairs), np.float32)  # the pairs are their own targets
    return Task(
        "skip-gram", (pairs[:split], empty[:split]), (pairs[split:], empty[split:]),
        params, loss, loss, "test loss", 64,
    )  # fmt: skip


def eqx_cnn_task():
    """An Equinox CNN on the 8x8 digits, written with `equinox.nn` modules as a
    user would: Conv2d(1, 8, 3) - ReLU - MaxPool 2 - Conv2d(8, 16, 3) - ReLU -
    MaxPool 2 - Linear(64, 10), each example through `jax.vmap`; the parameters
    are the model's arrays (`eqx.partition`), grouped by its modules."""
    import equinox as eqx

    d = ro.load_digits()
    ks = jr.split(jr.key(191), 3)
    pool = eqx.nn.MaxPool2d(2, 2)
    model = [
        eqx.nn.Conv2d(1, 8, 3, padding=1, key=ks[0]),
        eqx.nn.Conv2d(8, 16, 3, padding=1, key=ks[1]),
        eqx.nn.Linear(64, 10, key=ks[2]),
    ]
    params, static = eqx.partition(model, eqx.is_array)

    def net(p, x):
        c1, c2, out = eqx.combine(p, static)

        def one(image):
            h = pool(jax.nn.relu(c1(image.reshape(1, 8, 8))))
            h = pool(jax.nn.relu(c2(h)))
            return out(h.reshape(-1))

        return jax.vmap(one)(x)

    return Task(
        "Equinox CNN, max-pooled", d.train, d.test, params,
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net), "test accuracy", 64,
    )  # fmt: skip


def nnx_friedman_task():
    """A Flax NNX MLP (10-64-64-1, GELU) on Friedman's first regression problem
    (`sklearn.datasets.make_friedman1`, noise 1, targets left as they come: mean
    about 14, sd about 5); the parameters are the model's `nnx.State`."""
    from flax import nnx
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(2500, noise=1.0, random_state=193)
    x, y = x.astype(np.float32), y.astype(np.float32)[:, None]

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(10, 64, rngs=rngs)
            self.l2 = nnx.Linear(64, 64, rngs=rngs)
            self.l3 = nnx.Linear(64, 1, rngs=rngs)

        def __call__(self, x):
            return self.l3(jax.nn.gelu(self.l2(jax.nn.gelu(self.l1(x)))))

    graph, params = nnx.split(Net(nnx.Rngs(197)))

    def mse(p, b):
        return jnp.mean((nnx.merge(graph, p)(b[0]) - b[1]) ** 2)

    return Task(
        "Flax NNX MLP, Friedman #1", (x[:2000], y[:2000]), (x[2000:], y[2000:]),
        params, mse, mse, "test MSE", 32,
    )  # fmt: skip


def flow_task(couplings: int = 4, hidden: int = 32):
    """A RealNVP normalising flow on two moons: four affine couplings (each a
    1-32-32-2 tanh MLP giving a tanh-bounded log-scale and a shift of one
    coordinate from the other, alternating), trained by the negative
    log-likelihood under a standard normal base: density estimation through
    log-determinants."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(3000, noise=0.05, random_state=199)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    keys = jr.split(jr.key(211), couplings)
    params = [init_mlp(k, (1, hidden, hidden, 2)) for k in keys]
    for p in params:  # each coupling starts as the identity
        p[-1]["w"] = jnp.zeros_like(p[-1]["w"])

    def nll(p, b):
        z, logdet = b[0], 0.0
        for i, net in enumerate(p):
            keep, move = (0, 1) if i % 2 == 0 else (1, 0)
            out = mlp(net, z[:, keep : keep + 1])
            log_scale = jnp.tanh(out[:, 0])
            moved = z[:, move] * jnp.exp(log_scale) + out[:, 1]
            z = z.at[:, move].set(moved)
            logdet = logdet + log_scale
        return jnp.mean(0.5 * jnp.sum(z**2, 1) + np.log(2 * np.pi) - logdet)

    empty = np.zeros(len(x), np.float32)
    return Task(
        "RealNVP flow, two moons", (x[:2500], empty[:2500]), (x[2500:], empty[2500:]),
        params, nll, nll, "test NLL", 64,
    )  # fmt: skip


def bf16_task():
    """A 20-64-64-4 ReLU MLP whose parameters and arithmetic are bfloat16 (the
    loss summed in float32), on `sklearn.datasets.make_classification` (20
    features, 8 informative, 4 classes): 16-bit parameters, for every method."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        3000, 20, n_informative=8, n_classes=4, class_sep=1.0, random_state=223
    )
    x, y = x.astype(np.float32), y.astype(np.int32)
    params = jax.tree.map(
        lambda a: a.astype(jnp.bfloat16), init_mlp(jr.key(227), (20, 64, 64, 4))
    )

    def logits(p, xs):
        return mlp(p, xs.astype(jnp.bfloat16)).astype(jnp.float32)

    return Task(
        "bfloat16 MLP", (x[:2500], y[:2500]), (x[2500:], y[2500:]), params,
        lambda p, b: _ce(logits(p, b[0]), b[1]), _accuracy(logits),
        "test accuracy", 64,
    )  # fmt: skip


def _patches(x):
    """A batch of flattened 8x8 digits as 16 patches of 2x2 each: (batch, 16, 4)."""
    return x.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)


def _pooled_head(p, h):
    """Tokens (batch, tokens, d) mean-pooled, LayerNormed (`p["ln3"]`) and
    mapped to logits by `p["head"]`."""
    z = _layer_norm(h.mean(1), p["ln3"])
    return z @ p["head"]["w"] + p["head"]["b"]


def _digits_task(name, params, logits, batch=64):
    """A digits classifier `logits(params, x)`: cross-entropy, test accuracy."""
    d = ro.load_digits()
    return Task(
        name, d.train, d.test, params, lambda p, b: _ce(logits(p, b[0]), b[1]),
        _accuracy(logits), "test accuracy", batch,
    )  # fmt: skip


def vit_task(d: int = 32, heads: int = 2):
    """A vision transformer on digits: the 8x8 image as 16 patches of 2x2,
    embedded, with learned positions, one pre-LayerNorm block (two heads, GELU
    MLP), mean-pooled, LayerNorm, a linear head."""
    ks = jr.split(jr.key(229), 7)
    square = functools.partial(_square, d=d)
    params = {
        "patch": init_mlp(ks[0], (4, d))[0],
        "pos": jr.normal(ks[1], (16, d)) * 0.1,
        "ln1": _norm_params(d),
        "qkv": [square(k) for k in jr.split(ks[2], 3)],
        "wo": square(ks[3]),
        "ln2": _norm_params(d),
        "ff": init_mlp(ks[4], (d, 2 * d, d)),
        "ln3": _norm_params(d),
        "head": init_mlp(ks[5], (d, 10))[0],
    }

    def logits(p, x):
        img = _patches(x)
        h = img @ p["patch"]["w"] + p["patch"]["b"] + p["pos"]
        a = _layer_norm(h, p["ln1"])
        split = lambda z: z.reshape(*z.shape[:2], heads, d // heads)  # noqa: E731
        q, k, v = (split(a @ w) for w in p["qkv"])
        s = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(d // heads)
        o = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, -1), v)
        h = h + o.reshape(h.shape) @ p["wo"]
        (l1, l2), f = p["ff"], _layer_norm(h, p["ln2"])
        h = h + jax.nn.gelu(f @ l1["w"] + l1["b"]) @ l2["w"] + l2["b"]
        return _pooled_head(p, h)

    return _digits_task("digits ViT", params, logits)


def gmm_task(components: int = 5):
    """A 2-D Gaussian mixture (5 components, diagonal covariances) fitted by
    maximum likelihood: the mean negative log-likelihood of each batch, the
    means started from N(0, 1), the scales softplus(s) + 1e-3, the weights a
    softmax; the data drawn from 5 components of different weights and
    widths."""
    rng = np.random.default_rng(233)
    centres = rng.uniform(-6, 6, (components, 2))
    widths = rng.uniform(0.3, 1.5, (components, 2))
    weights = rng.dirichlet(np.full(components, 2.0))
    z = rng.choice(components, 3000, p=weights)
    x = (centres[z] + widths[z] * rng.normal(size=(3000, 2))).astype(np.float32)
    params = {
        "logits": jnp.zeros(components),
        "means": jr.normal(jr.key(239), (components, 2)),
        "scales": jnp.full((components, 2), 0.55),  # softplus: 1.0
    }

    def nll(p, b):
        scale = jax.nn.softplus(p["scales"]) + 1e-3
        diff = (b[0][:, None, :] - p["means"][None]) / scale[None]
        log_pdf = -0.5 * jnp.sum(diff**2, -1) - jnp.sum(jnp.log(scale), -1)
        log_pdf = log_pdf - jnp.log(2 * jnp.pi)
        joint = log_pdf + jax.nn.log_softmax(p["logits"])[None]
        return -jnp.mean(jax.nn.logsumexp(joint, -1))

    y = np.zeros(3000, np.float32)  # unused: the batches carry the points
    return Task(
        "Gaussian mixture NLL", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        params, nll, nll, "test NLL", 64,
    )  # fmt: skip


def gnn_task(nodes: int = 600, blocks: int = 4, features: int = 8):
    """Node classification on a stochastic block model (600 nodes, 4 blocks, edges
    within a block with probability 0.05, across 0.005) by a two-layer graph
    convolutional network (symmetrically normalised adjacency with self-loops),
    from noisy features (the block's one-hot in 4 of 8 dimensions under noise of
    scale 2). Each batch is 32 training nodes, the network run on the whole
    graph; 400 nodes train, 200 test."""
    rng = np.random.default_rng(241)
    block = rng.integers(0, blocks, nodes)
    same = block[:, None] == block[None, :]
    upper = np.triu(rng.uniform(size=(nodes, nodes)) < np.where(same, 0.05, 0.005), 1)
    adj = (upper | upper.T).astype(np.float32) + np.eye(nodes, dtype=np.float32)
    norm = 1 / np.sqrt(adj.sum(1))
    a_hat = jnp.asarray(adj * norm[:, None] * norm[None, :])
    feats = np.zeros((nodes, features), np.float32)
    feats[np.arange(nodes), block] = 1.0
    feats = jnp.asarray(feats + 2.0 * rng.normal(size=feats.shape).astype(np.float32))
    params = init_mlp(jr.key(251), (features, 32, blocks))

    def logits(p, idx):
        (l1, l2) = p
        h = jax.nn.relu(a_hat @ (feats @ l1["w"]) + l1["b"])
        return (a_hat @ (h @ l2["w"]) + l2["b"])[idx]

    order = rng.permutation(nodes).astype(np.int32)
    y = block.astype(np.int32)
    train, test = (order[:400], y[order[:400]]), (order[400:], y[order[400:]])
    return Task(
        "graph convolutional network", train, test, params,
        lambda p, b: _ce(logits(p, b[0]), b[1]), _accuracy(logits),
        "test accuracy", 32,
    )  # fmt: skip


def deep_tanh_task(depth: int = 10, width: int = 32, gain: float = 0.6):
    """A 10-layer tanh MLP of width 32 on digits, its weights started at 0.6 of
    the usual 1 / sqrt(fan-in) scale, so that the signal and the gradients shrink
    through the layers (vanishing gradients: layers whose gradients differ by
    orders of magnitude)."""
    d = ro.load_digits()
    params = init_mlp(jr.key(257), (64,) + (width,) * depth + (10,))
    params = [{"w": gain * q["w"], "b": q["b"]} for q in params]
    return Task(
        "deep tanh MLP, small init", d.train, d.test, params,
        lambda p, b: _ce(mlp(p, b[0]), b[1]), _accuracy(mlp),
        "test accuracy", 64,
    )  # fmt: skip


def bn_cnn_task():
    """A ReLU CNN on digits with batch normalisation after each convolution
    (the batch's own statistics, at test too: no running averages; learned
    scale and shift), two 3x3 convolutions (8 and 16 channels, the second with
    stride 2) and a linear head."""
    d = ro.load_digits()
    k1, k2, k3 = jr.split(jr.key(263), 3)
    params = {
        "c1": {"w": jr.normal(k1, (3, 3, 1, 8)) * jnp.sqrt(2 / 9), **_bn(8)},
        "c2": {"w": jr.normal(k2, (3, 3, 8, 16)) * jnp.sqrt(2 / 72), **_bn(16)},
        "out": init_mlp(k3, (4 * 4 * 16, 10))[0],
    }

    def logits(p, x):
        h = x.reshape(-1, 8, 8, 1)
        dn = ("NHWC", "HWIO", "NHWC")
        for name, stride in (("c1", 1), ("c2", 2)):
            q = p[name]
            h = jax.lax.conv_general_dilated(
                h, q["w"], (stride, stride), "SAME", None, None, dn
            )
            mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
            h = jax.nn.relu((h - mean) / jnp.sqrt(var + 1e-5) * q["scale"] + q["shift"])
        return h.reshape(h.shape[0], -1) @ p["out"]["w"] + p["out"]["b"]

    return Task(
        "batch-normalised CNN", d.train, d.test, params,
        lambda p, b: _ce(logits(p, b[0]), b[1]), _accuracy(logits),
        "test accuracy", 64,
    )  # fmt: skip


def _bn(channels: int) -> dict:
    return {"scale": jnp.ones(channels), "shift": jnp.zeros(channels)}


def lstm_task(context: int = 16, hidden: int = 48, max_chars: int = 60_000):
    """A character-level LSTM language model (the next character after 16, one
    LSTM layer of 48 units, forget gate's bias started at 1) on Python's own
    `textwrap.py`."""
    n, *data = char_windows(("textwrap.py",), context, max_chars, stride=3)
    k1, k2, k3 = jr.split(jr.key(269), 3)
    params = {
        "embed": jr.normal(k1, (n, 16)) * 0.3,
        "lstm": {
            "wx": jr.normal(k2, (16, 4 * hidden)) / 4.0,
            "wh": jr.normal(k3, (hidden, 4 * hidden)) / jnp.sqrt(hidden),
            "b": jnp.zeros(4 * hidden).at[hidden : 2 * hidden].set(1.0),
        },
        "out": init_mlp(jr.key(271), (hidden, n))[0],
    }

    def logits(p, x):
        q, xs = p["lstm"], p["embed"][x]

        def cell(carry, x_t):
            h, c = carry
            i, f, g, o = jnp.split(x_t @ q["wx"] + h @ q["wh"] + q["b"], 4, -1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((xs.shape[0], hidden), xs.dtype)
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(xs, 0, 1))
        return h @ p["out"]["w"] + p["out"]["b"]

    return next_char_task(f"char LSTM ({n} symbols)", data, params, logits, 64)


def distill_task(temperature: float = 4.0):
    """Knowledge distillation on digits: a 64-32-10 tanh student fitted to a
    fixed, wider random teacher's (64-256-10 ReLU, weights at 3x the usual
    scale) softened outputs, softmax(logits / 4): the batch's mean KL divergence
    from the teacher, soft targets with no labels."""
    d = ro.load_digits()
    teacher = [
        {"w": 3 * q["w"], "b": q["b"]} for q in init_mlp(jr.key(277), (64, 256, 10))
    ]

    def soft(p, x, act):
        return jax.nn.log_softmax(mlp(p, x, act) / temperature, -1)

    def kl(p, b):
        t = soft(teacher, b[0], jax.nn.relu)
        return jnp.mean(jnp.sum(jnp.exp(t) * (t - soft(p, b[0], jnp.tanh)), -1))

    return Task(
        "distillation to soft targets", d.train, d.test,
        init_mlp(jr.key(281), (64, 32, 10)), kl, kl, "test KL", 64,
    )  # fmt: skip


def sparse_logistic_task(features: int = 2000, active: int = 20):
    """Logistic regression on sparse counts: 4000 documents of 20 words drawn
    from 2000 with Zipf frequencies (exponent 1.1), labels from a sparse true
    weight vector (100 nonzero) with 5 % of them flipped; the rare words' weights
    get few, large gradients (the case AdaGrad was made for)."""
    rng = np.random.default_rng(283)
    freq = 1.0 / np.arange(1, features + 1) ** 1.1
    words = rng.choice(features, (4000, active), p=freq / freq.sum())
    x = np.zeros((4000, features), np.float32)
    np.add.at(x, (np.arange(4000)[:, None], words), 1.0)
    true = np.zeros(features, np.float32)
    true[rng.choice(features, 100, replace=False)] = rng.normal(0, 2, 100)
    y = (x @ true + 0.1 * rng.normal(size=4000) > 0).astype(np.int32)
    y = np.where(rng.random(4000) < 0.05, 1 - y, y)
    params = {"w": jnp.zeros(features), "b": jnp.zeros(())}

    def logit(p, x):
        return x @ p["w"] + p["b"]

    def loss(p, b):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logit(p, b[0]), b[1]))

    def accuracy(p, b):
        return jnp.mean((logit(p, b[0]) > 0) == (b[1] > 0))

    return Task(
        "sparse logistic regression", (x[:3200], y[:3200]), (x[3200:], y[3200:]),
        params, loss, accuracy, "test accuracy", 64,
    )  # fmt: skip


def _rms_norm(h, g):
    """RMSNorm over the last axis with gain `g` (no bias)."""
    return h * jax.lax.rsqrt(jnp.mean(h * h, -1, keepdims=True) + 1e-6) * g


def transformer_task(context: int = 16, d: int = 32, heads: int = 2, blocks: int = 2):
    """A two-block causal transformer language model (pre-RMSNorm, two heads,
    a SiLU MLP, a residual stream) predicting the next character of
    `shutil.py`: depth in the residual stream, which `attention` (one block)
    does not have."""
    n, *data = char_windows(("shutil.py",), context, 60_000, stride=2)
    ks = jr.split(jr.key(293), 3 + blocks)
    square = functools.partial(_square, d=d)

    def block(k):
        kq, kk, kv, ko, kf = jr.split(k, 5)
        return {
            "n1": jnp.ones(d),
            "qkv": [square(kq), square(kk), square(kv)],
            "wo": square(ko) / jnp.sqrt(2 * blocks),
            "n2": jnp.ones(d),
            "ff": init_mlp(kf, (d, 4 * d, d)),
        }

    params = {
        "embed": jr.normal(ks[0], (n, d)) * 0.3,
        "pos": jr.normal(ks[1], (context, d)) * 0.1,
        "blocks": [block(k) for k in ks[3:]],
        "nf": jnp.ones(d),
        "out": init_mlp(ks[2], (d, n))[0],
    }
    causal = jnp.tril(jnp.ones((context, context), bool))[None, None]

    def logits(p, x):
        h = p["embed"][x] + p["pos"][None]
        split = lambda z: z.reshape(*z.shape[:2], heads, d // heads)  # noqa: E731
        for q in p["blocks"]:
            a = _rms_norm(h, q["n1"])
            qq, kk, vv = (split(a @ w) for w in q["qkv"])
            s = jnp.einsum("bthd,bshd->bhts", qq, kk) / jnp.sqrt(d // heads)
            s = jnp.where(causal, s, -1e9)
            o = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, -1), vv)
            h = h + o.reshape(h.shape) @ q["wo"]
            (l1, l2), f = q["ff"], _rms_norm(h, q["n2"])
            h = h + jax.nn.silu(f @ l1["w"] + l1["b"]) @ l2["w"] + l2["b"]
        return _rms_norm(h[:, -1], p["nf"]) @ p["out"]["w"] + p["out"]["b"]

    return next_char_task(f"char transformer ({n} symbols)", data, params, logits, 64)


def l2_task(penalty: float = 1e-3):
    """The digits MLP (64-128-10 tanh) with an L2 penalty of 1e-3 x the sum of
    squared weights in its loss: a regularised objective, whose minimum is where
    the data's gradient balances the penalty's (never a fitted batch)."""
    d = ro.load_digits()

    def loss(p, b):
        l2 = sum(jnp.sum(q["w"] ** 2) for q in p)
        return _ce(mlp(p, b[0]), b[1]) + penalty * l2

    return Task(
        "digits MLP, L2 penalty", d.train, d.test, init_mlp(jr.key(307), (64, 128, 10)),
        loss, _accuracy(mlp), "test accuracy", 64,
    )  # fmt: skip


def sigmoid_task():
    """A 30-64-64-2 MLP with logistic-sigmoid units on breast cancer: units that
    are not zero-centred and pass at most a quarter of the gradient each."""
    from sklearn.datasets import load_breast_cancer

    train, test = standardised_split(load_breast_cancer(), 455)
    net = lambda p, x: mlp(p, x, jax.nn.sigmoid)  # noqa: E731
    return Task(
        "breast-cancer sigmoid MLP", train, test,
        init_mlp(jr.key(311), (30, 64, 64, 2)),
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net), "test accuracy", 32,
    )  # fmt: skip


def quantile_task(levels=(0.1, 0.5, 0.9)):
    """A 1-64-64-3 SiLU MLP fitting the 10th, 50th and 90th percentiles of
    y = sin(2x) + noise whose scale grows with |x| (skewed: a Gumbel draw), by
    the pinball loss: a non-smooth loss with three outputs pulled by their own
    asymmetric slopes."""
    rng = np.random.default_rng(313)
    n = 3000
    x = rng.uniform(-2.0, 2.0, (n, 1)).astype(np.float32)
    y = np.sin(2 * x) + (0.1 + 0.4 * np.abs(x)) * rng.gumbel(size=(n, 1))
    y = y.astype(np.float32)
    tau = jnp.asarray(levels)
    net = lambda p, x: mlp(p, x, jax.nn.silu)  # noqa: E731

    def pinball(p, b):
        r = b[1] - net(p, b[0])
        return jnp.mean(jnp.maximum(tau * r, (tau - 1) * r))

    return Task(
        "quantile regression", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        init_mlp(jr.key(317), (1, 64, 64, 3)), pinball, pinball,
        "test pinball loss", 64,
    )  # fmt: skip


def denoise_task(hidden: int = 128):
    """Denoising score matching (a diffusion model's noise-prediction loss) on
    two moons: a 3-128-128-2 SiLU MLP is given x_t = sqrt(a) x + sqrt(1 - a) e,
    a = cos(pi t / 2)^2, and t, and predicts e; t ~ U(0, 1) and e ~ N(0, I)
    drawn afresh per batch. A loss whose floor is high and whose batches are
    noisy however well the model fits."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(4000, noise=0.05, random_state=331)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    net = lambda p, z: mlp(p, z, jax.nn.silu)  # noqa: E731

    def loss(p, b):
        kt, ke = jr.split(_key_of(b[0]))
        t = jr.uniform(kt, (len(b[0]), 1))
        e = jr.normal(ke, b[0].shape)
        a = jnp.cos(0.5 * jnp.pi * t) ** 2
        xt = jnp.sqrt(a) * b[0] + jnp.sqrt(1 - a) * e
        return jnp.mean((net(p, jnp.concatenate([xt, t], 1)) - e) ** 2)

    empty = np.zeros(len(x), np.float32)  # the points are their own targets
    return Task(
        "denoising score matching", (x[:3000], empty[:3000]), (x[3000:], empty[3000:]),
        init_mlp(jr.key(337), (3, hidden, hidden, 2)), loss, loss,
        "test loss", 128,
    )  # fmt: skip


def recommender_task(users: int = 300, items: int = 200, dim: int = 8):
    """Matrix completion: ratings from a rank-5 model plus user, item and global
    offsets and noise (sd 0.3), 12000 of the 60000 observed; the model, user and
    item embedding tables (8-d, small init) with a bias per user, per item and a
    global one, fit by squared error. Each batch touches few rows of each table,
    and the global offset (3.0) is far from the init."""
    rng = np.random.default_rng(347)
    u_true = rng.normal(size=(users, 5)) / np.sqrt(5)
    v_true = rng.normal(size=(items, 5))
    bu, bi = 0.5 * rng.normal(size=users), 0.5 * rng.normal(size=items)
    cells = rng.choice(users * items, 12000, replace=False)
    u, i = cells // items, cells % items
    r = (u_true[u] * v_true[i]).sum(1) + bu[u] + bi[i] + 3.0
    r = (r + 0.3 * rng.normal(size=len(r))).astype(np.float32)
    ui = np.stack([u, i], 1).astype(np.int32)
    k1, k2 = jr.split(jr.key(349))
    params = {
        "users": 0.1 * jr.normal(k1, (users, dim)),
        "items": 0.1 * jr.normal(k2, (items, dim)),
        "user_bias": jnp.zeros(users),
        "item_bias": jnp.zeros(items),
        "bias": jnp.zeros(()),
    }

    def predict(p, ui):
        uu, ii = ui[:, 0], ui[:, 1]
        dot = jnp.sum(p["users"][uu] * p["items"][ii], -1)
        return dot + p["user_bias"][uu] + p["item_bias"][ii] + p["bias"]

    mse = lambda p, b: jnp.mean((predict(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "matrix-completion recommender",
        (ui[:10000], r[:10000]), (ui[10000:], r[10000:]),
        params, mse, mse, "test MSE", 128,
    )  # fmt: skip


def moe_task(experts: int = 4, hidden: int = 32):
    """A soft mixture of four experts on digits: a softmax gate (64 -> 4) weighs
    the logits of four 64-32-10 tanh MLPs. The gate's gradient goes through
    every expert's output, and each expert's is scaled by its gate."""
    keys = jr.split(jr.key(353), experts + 1)
    params = {
        "gate": {"w": jr.normal(keys[0], (64, experts)) / 8.0, "b": jnp.zeros(experts)},
        "experts": [init_mlp(k, (64, hidden, 10)) for k in keys[1:]],
    }

    def net(p, x):
        g = jax.nn.softmax(x @ p["gate"]["w"] + p["gate"]["b"])
        logits = jnp.stack([mlp(e, x) for e in p["experts"]], 1)
        return jnp.einsum("bk,bkc->bc", g, logits)

    return _digits_task("digits mixture of experts", params, net)


def conv_ae_task(length: int = 64):
    """A 1-D convolutional autoencoder on noisy sums of three sines (length 64):
    two strided convolutions (8, 16 channels) to a 16-d linear bottleneck, and
    back by a dense layer, two upsamplings and two convolutions; squared error
    against the noisy input."""
    rng = np.random.default_rng(359)
    n = 2400
    t = np.arange(length) / length
    freq = rng.uniform(1, 8, (n, 3, 1))
    amp = rng.uniform(0.3, 1.0, (n, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 3, 1))
    x = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(1)
    x = (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)[..., None]
    ks = jr.split(jr.key(367), 6)
    w = lambda k, shape, fan: jr.normal(k, shape) / np.sqrt(fan)  # noqa: E731
    params = {
        "enc1": {"w": w(ks[0], (5, 1, 8), 5), "b": jnp.zeros(8)},
        "enc2": {"w": w(ks[1], (5, 8, 16), 40), "b": jnp.zeros(16)},
        "code": {"w": w(ks[2], (256, 16), 256), "b": jnp.zeros(16)},
        "expand": {"w": w(ks[3], (16, 256), 16), "b": jnp.zeros(256)},
        "dec1": {"w": w(ks[4], (5, 16, 8), 80), "b": jnp.zeros(8)},
        "dec2": {"w": w(ks[5], (5, 8, 1), 40), "b": jnp.zeros(1)},
    }

    def conv(h, layer, stride=1):
        return (
            jax.lax.conv_general_dilated(
                h,
                layer["w"],
                (stride,),
                "SAME",
                dimension_numbers=("NWC", "WIO", "NWC"),
            )
            + layer["b"]
        )

    def net(p, xs):
        h = jax.nn.relu(conv(xs, p["enc1"], 2))
        h = jax.nn.relu(conv(h, p["enc2"], 2))
        z = h.reshape(len(xs), -1) @ p["code"]["w"] + p["code"]["b"]
        h = jax.nn.relu(z @ p["expand"]["w"] + p["expand"]["b"]).reshape(-1, 16, 16)
        h = jax.nn.relu(conv(jnp.repeat(h, 2, 1), p["dec1"]))
        return conv(jnp.repeat(h, 2, 1), p["dec2"])

    mse = lambda p, b: jnp.mean((net(p, b[0]) - b[0]) ** 2)  # noqa: E731
    return Task(
        "1-D conv autoencoder", (x[:2000], x[:2000]), (x[2000:], x[2000:]),
        params, mse, mse, "test MSE", 32,
    )  # fmt: skip


def neural_ode_task(width: int = 32, substeps: int = 8):
    """A neural ODE: a 2-32-32-2 tanh vector field integrated by 8 RK4 steps
    from t to t + 0.5, fit to the points of a damped spiral's trajectory half a
    time unit apart (a noisy observation of each): the gradient passes through
    32 evaluations of the same network."""
    rng = np.random.default_rng(373)
    a = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    z0 = rng.uniform(-2, 2, (2000, 2))
    lin = _expm(0.5 * a)
    z1 = z0 @ lin.T + 0.05 * rng.normal(size=z0.shape)
    z0, z1 = z0.astype(np.float32), z1.astype(np.float32)
    field = lambda p, z: mlp(p, z)  # noqa: E731
    h = 0.5 / substeps

    def flow(p, z):
        def rk4(z, _):
            k1 = field(p, z)
            k2 = field(p, z + 0.5 * h * k1)
            k3 = field(p, z + 0.5 * h * k2)
            k4 = field(p, z + h * k3)
            return z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        return jax.lax.scan(rk4, z, None, length=substeps)[0]

    mse = lambda p, b: jnp.mean((flow(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "neural ODE", (z0[:1600], z1[:1600]), (z0[1600:], z1[1600:]),
        init_mlp(jr.key(379), (2, width, width, 2)), mse, mse, "test MSE", 64,
    )  # fmt: skip


def _expm(m):
    """exp(m) of a small diagonalisable matrix, by its eigendecomposition."""
    w, v = np.linalg.eig(m)
    return np.real(v @ np.diag(np.exp(w)) @ np.linalg.inv(v))


def imbalanced_task():
    """Digits "is it an 8?" (1 positive in 10) by a 64-32-1 tanh MLP and the
    logistic loss: most batches hold a handful of positives, so the gradient
    the rare class gives swings from batch to batch."""
    d = ro.load_digits()
    tr, te = d.train, d.test
    train = (tr[0], (tr[1] == 8).astype(np.float32))
    test = (te[0], (te[1] == 8).astype(np.float32))
    net = lambda p, x: mlp(p, x)[:, 0]  # noqa: E731

    def loss(p, b):
        z = net(p, b[0])
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, b[1]))

    def balanced_accuracy(p, b):
        pred = net(p, b[0]) > 0
        pos = b[1] > 0.5
        tpr = jnp.sum(pred & pos) / jnp.sum(pos)
        tnr = jnp.sum(~pred & ~pos) / jnp.sum(~pos)
        return 0.5 * (tpr + tnr)

    return Task(
        "digits, one class in ten", train, test, init_mlp(jr.key(383), (64, 32, 1)),
        loss, balanced_accuracy, "test balanced accuracy", 32,
    )  # fmt: skip


def mixer_task(d: int = 32):
    """An MLP-Mixer block on digits: 16 patches of 2x2 embedded to 32 channels,
    a token-mixing MLP (16-32-16, across patches) and a channel-mixing MLP
    (32-64-32), each after a LayerNorm with a residual, mean-pooled to a linear
    head. No attention: mixing by weights shared across the other axis."""
    ks = jr.split(jr.key(389), 4)
    params = {
        "patch": init_mlp(ks[0], (4, d))[0],
        "ln1": _norm_params(d),
        "tokens": init_mlp(ks[1], (16, 32, 16)),
        "ln2": _norm_params(d),
        "channels": init_mlp(ks[2], (d, 2 * d, d)),
        "ln3": _norm_params(d),
        "head": init_mlp(ks[3], (d, 10))[0],
    }

    def logits(p, x):
        img = _patches(x)
        h = img @ p["patch"]["w"] + p["patch"]["b"]
        a = _layer_norm(h, p["ln1"]).transpose(0, 2, 1)  # (batch, channel, token)
        h = h + mlp(p["tokens"], a, jax.nn.gelu).transpose(0, 2, 1)
        h = h + mlp(p["channels"], _layer_norm(h, p["ln2"]), jax.nn.gelu)
        return _pooled_head(p, h)

    return _digits_task("digits MLP-Mixer", params, logits)


def deep_sets_task(size: int = 10):
    """Deep sets: sets of 10 points in 2-D, each through a shared 2-32-32 ReLU
    encoder, summed, and a 32-32-1 decoder regressing the set's largest
    distance from the origin (a permutation-invariant target that a sum
    approximates only through the encoder)."""
    rng = np.random.default_rng(397)
    x = rng.normal(size=(3000, size, 2)).astype(np.float32)
    y = np.sqrt((x**2).sum(-1)).max(-1).astype(np.float32)
    k1, k2 = jr.split(jr.key(401))
    params = {"phi": init_mlp(k1, (2, 32, 32)), "rho": init_mlp(k2, (32, 32, 1))}

    def predict(p, xs):
        h = jax.nn.relu(mlp(p["phi"], xs, jax.nn.relu)).sum(1)
        return mlp(p["rho"], h, jax.nn.relu)[:, 0]

    mse = lambda p, b: jnp.mean((predict(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "deep sets", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        params, mse, mse, "test MSE", 64,
    )  # fmt: skip


def lora_task(rank: int = 4):
    """Low-rank adaptation: a 64-64-10 tanh MLP trained on digits 0-4 alone (300
    full-batch Adam steps at 3e-3 when the task is made) and frozen; rank-4
    adapters A B added to both weight matrices (A ~ N(0, 1 / fan-in), B = 0, as
    LoRA starts them) are trained on all ten digits. With B = 0, A's gradient is
    0 at the start: the adapters leave a saddle."""
    d = ro.load_digits()
    x0, y0 = d.train
    xb, yb = jnp.asarray(x0[y0 < 5]), jnp.asarray(y0[y0 < 5])
    adam = optax.adam(3e-3)

    def pretrain(_, carry):
        p, s = carry
        g = jax.grad(lambda p: _ce(mlp(p, xb), yb))(p)
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    base = init_mlp(jr.key(409), (64, 64, 10))
    base, _ = jax.lax.fori_loop(0, 300, pretrain, (base, adam.init(base)))
    ks = jr.split(jr.key(419), 2)
    params = {
        f"l{i}": {
            "a": jr.normal(k, (layer["w"].shape[0], rank))
            / np.sqrt(layer["w"].shape[0]),
            "b": jnp.zeros((rank, layer["w"].shape[1])),
        }
        for i, (k, layer) in enumerate(zip(ks, base))
    }

    def logits(p, x):
        adapted = [
            {"w": layer["w"] + p[f"l{i}"]["a"] @ p[f"l{i}"]["b"], "b": layer["b"]}
            for i, layer in enumerate(base)
        ]
        return mlp(adapted, x)

    return _digits_task("LoRA adapters on a frozen MLP", params, logits)


def survival_task():
    """Cox proportional hazards by a 10-32-1 tanh MLP: each batch's negative
    partial log-likelihood, every event against the batch's examples still at
    risk at its time (a loss over the batch's order in time). Synthetic event
    times ~ Exp(rate exp(f(x))), f nonlinear in five of the ten features, about
    30 % censored. Test metric: the concordance index (higher is better)."""
    rng = np.random.default_rng(421)
    x = rng.normal(size=(3000, 10)).astype(np.float32)
    f = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - x[:, 2] * x[:, 3] + 0.5 * x[:, 4]
    t = rng.exponential(1.0 / np.exp(f))
    c = rng.exponential(4.0 * np.median(t), size=len(t))  # censoring times
    y = np.stack([np.minimum(t, c), t <= c], 1).astype(np.float32)
    risk = lambda p, xs: mlp(p, xs)[:, 0]  # noqa: E731

    def loss(p, b):
        r, time, event = risk(p, b[0]), b[1][:, 0], b[1][:, 1]
        at_risk = time[None, :] >= time[:, None]  # [i, j]: j still at risk at t_i
        log_den = jax.nn.logsumexp(jnp.where(at_risk, r[None, :], -jnp.inf), axis=1)
        return -jnp.sum(event * (r - log_den)) / jnp.maximum(jnp.sum(event), 1.0)

    def concordance(p, b):
        r, time, event = risk(p, b[0]), b[1][:, 0], b[1][:, 1]
        pairs = (time[:, None] < time[None, :]) & (event[:, None] > 0)
        right = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
        return jnp.sum(pairs * right) / jnp.sum(pairs)

    return Task(
        "Cox survival MLP", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        init_mlp(jr.key(431), (10, 32, 1)), loss, concordance,
        "test concordance index", 64,
    )  # fmt: skip


def sinkhorn_task(eps: float = 0.05, iterations: int = 30):
    """A 2-32-32-2 tanh generator of 2-D points from Gaussian noise, trained on
    the Sinkhorn divergence between a batch of its points and a batch of points
    on a noisy ring (entropic optimal-transport costs by 30 log-domain Sinkhorn
    iterations at eps = 0.05, differentiated through, less half of each batch's
    cost against itself, so that matching distributions score about 0): a loss
    through an iterative solver, between two batches matched afresh each time."""
    rng = np.random.default_rng(433)
    n = 3000
    z = rng.normal(size=(n, 2)).astype(np.float32)
    angle, radius = rng.uniform(0, 2 * np.pi, n), 1 + 0.1 * rng.normal(size=n)
    ring = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)

    def ot_cost(x, y):
        cost = jnp.sum((x[:, None] - y[None]) ** 2, -1)
        log_w = -jnp.log(x.shape[0])

        def sweep(_, fg):
            f, g = fg
            f = -eps * jax.nn.logsumexp((g[None, :] - cost) / eps + log_w, axis=1)
            g = -eps * jax.nn.logsumexp((f[:, None] - cost) / eps + log_w, axis=0)
            return f, g

        zero = jnp.zeros(x.shape[0])
        f, g = jax.lax.fori_loop(0, iterations, sweep, (zero, zero))
        return jnp.mean(f) + jnp.mean(g)

    def divergence(p, b):
        x, y = mlp(p, b[0]), b[1]
        return ot_cost(x, y) - 0.5 * (ot_cost(x, x) + ot_cost(y, y))

    return Task(
        "Sinkhorn generator", (z[:2500], ring[:2500].astype(np.float32)),
        (z[2500:], ring[2500:].astype(np.float32)),
        init_mlp(jr.key(439), (2, 32, 32, 2)), divergence, divergence,
        "test Sinkhorn divergence", 64,
    )  # fmt: skip


def hypernet_task(width: int = 16):
    """A hypernetwork: a 2-32-49 tanh MLP maps a sine's amplitude and phase to
    the 49 weights of a 1-16-1 tanh network, which predicts that sine at 8
    points: the prediction is a product of the two networks' outputs."""
    rng = np.random.default_rng(443)
    n = 3000
    amplitude, phase = rng.uniform(0.5, 2.0, n), rng.uniform(0, np.pi, n)
    points = rng.uniform(-3, 3, (n, 8))
    y = (amplitude[:, None] * np.sin(points + phase[:, None])).astype(np.float32)
    x = np.concatenate([amplitude[:, None], phase[:, None], points], 1)
    x = x.astype(np.float32)

    def predict(p, x):
        w = mlp(p, x[:, :2])  # (batch, 3 * width + 1)
        w1, b1 = w[:, :width], w[:, width : 2 * width]
        w2, b2 = w[:, 2 * width : 3 * width], w[:, 3 * width]
        h = jnp.tanh(x[:, 2:, None] * w1[:, None] + b1[:, None])  # (batch, 8, width)
        return jnp.sum(h * w2[:, None], -1) + b2[:, None]

    mse = lambda p, b: jnp.mean((predict(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "hypernetwork on sines", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        init_mlp(jr.key(449), (2, 32, 3 * width + 1)), mse, mse, "test MSE", 64,
    )  # fmt: skip


def _cholesky(a):
    """The lower Cholesky factor of `a`, column by column in a loop of JAX
    operations. Not `jnp.linalg.cholesky`: with jax 0.10.2 on this CPU, programs
    that vmap LAPACK's factorisation inside a scan (this benchmark's grids)
    intermittently hang, every XLA thread idle and the result never ready (with
    and without `--xla_cpu_multi_thread_eigen=false`); this loop gives the same
    loss and gradients to float32 rounding and never hung."""
    n = a.shape[-1]
    below = jnp.arange(n)

    def column(j, low):
        v = a[:, j] - low @ low[j, :]
        return low.at[:, j].set(jnp.where(below >= j, v / jnp.sqrt(v[j]), 0.0))

    return jax.lax.fori_loop(0, n, column, jnp.zeros_like(a))


def _forward_substitution(low, y):
    """`low^-1 y` for a lower-triangular `low`, in a loop (see `_cholesky`)."""

    def entry(j, w):
        return w.at[j].set((y[j] - low[j, :] @ w) / low[j, j])

    return jax.lax.fori_loop(0, len(y), entry, jnp.zeros_like(y))


def gp_task(features: int = 4):
    """A deep-kernel Gaussian process: a 6-32-4 tanh MLP's features under an RBF
    kernel with a learned length scale per feature, a signal and a noise scale
    (log-parametrised), fit by each batch's negative log marginal likelihood per
    point (a Cholesky factor, a log-determinant and a solve: a loss whose
    parameters interact through a matrix inverse). Targets a smooth function of
    three of six inputs plus noise of sd 0.3 (so that the loss stays positive:
    the noise alone costs 0.5 log(2 pi e 0.09) = 0.21 nats a point). Test
    metric: the test set's negative log marginal likelihood per point (360
    points at once)."""
    rng = np.random.default_rng(457)
    n = 1500
    x = rng.uniform(-2, 2, size=(n, 6)).astype(np.float32)
    f = np.sin(1.5 * x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 2] ** 2
    y = (f + 0.3 * rng.normal(size=n)).astype(np.float32)
    params = {
        "net": init_mlp(jr.key(461), (6, 32, features)),
        "log_ls": jnp.zeros(features),
        "log_sf": jnp.zeros(()),
        "log_sn": jnp.asarray(np.log(0.5), jnp.float32),
    }

    def nlml(p, b):
        z = mlp(p["net"], b[0]) / jnp.exp(p["log_ls"])
        sq = jnp.sum((z[:, None] - z[None]) ** 2, -1)
        noise = jnp.exp(2 * p["log_sn"]) + 1e-4
        k = jnp.exp(2 * p["log_sf"] - 0.5 * sq) + noise * jnp.eye(len(z))
        chol = _cholesky(k)
        w = _forward_substitution(chol, b[1])  # y^T K^-1 y = |w|^2
        log_det = 2 * jnp.sum(jnp.log(jnp.diag(chol)))
        return 0.5 * (w @ w + log_det) / len(z) + 0.5 * np.log(2 * np.pi)

    return Task(
        "deep-kernel Gaussian process", (x[:1140], y[:1140]), (x[1140:], y[1140:]),
        params, nlml, nlml, "test NLML per point", 64,
    )  # fmt: skip


def maml_task(shots: int = 5, queries: int = 10, inner_lr: float = 0.1):
    """MAML on sines (Finn et al. 2017): each example is a task, a sine of
    amplitude in [0.5, 2] and phase in [0, pi], given as 5 support points and 10
    query points; a 1-40-40-1 tanh MLP takes one SGD step (lr 0.1) on the
    support set's MSE, and the loss is the adapted network's MSE on the queries
    (a gradient through a gradient: second order). Test metric: the same on
    tasks not trained on."""
    rng = np.random.default_rng(463)
    n = 3000
    amplitude, phase = rng.uniform(0.5, 2.0, n), rng.uniform(0, np.pi, n)
    points = rng.uniform(-5, 5, (n, shots + queries))
    values = amplitude[:, None] * np.sin(points + phase[:, None])
    x = np.concatenate([points, values[:, :shots]], 1).astype(np.float32)
    y = values[:, shots:].astype(np.float32)

    def predict(p, xs):
        return mlp(p, xs[:, None])[:, 0]

    def adapted_mse(p, xi, yi):
        sx, sy, qx = xi[:shots], xi[shots + queries :], xi[shots : shots + queries]
        g = jax.grad(lambda p: jnp.mean((predict(p, sx) - sy) ** 2))(p)
        fast = jax.tree.map(lambda a, b: a - inner_lr * b, p, g)
        return jnp.mean((predict(fast, qx) - yi) ** 2)

    def loss(p, b):
        return jnp.mean(jax.vmap(adapted_mse, (None, 0, 0))(p, b[0], b[1]))

    return Task(
        "MAML on sines", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        init_mlp(jr.key(467), (1, 40, 40, 1)), loss, loss,
        "test MSE after one inner step", 32,
    )  # fmt: skip


def made_task(hidden: int = 128):
    """MADE (Germain et al. 2015): an autoregressive density over digits'
    pixels binarised at 0.5, a 64-128-64 ReLU network whose weights are masked
    so that pixel i's logit depends only on pixels before it; the loss is the
    Bernoulli negative log-likelihood in nats per image (64 pixels). Pixels that
    are always 0 or 1 make parts of the output near-deterministic. Test metric:
    the test NLL."""
    d = ro.load_digits()
    rng = np.random.default_rng(479)
    degree_in = np.arange(1, 65)
    degree_hidden = rng.integers(1, 64, size=hidden)
    mask1 = (degree_hidden[None, :] >= degree_in[:, None]).astype(np.float32)
    mask2 = (degree_in[None, :] > degree_hidden[:, None]).astype(np.float32)
    binary = lambda a: (a > 0.5).astype(np.float32)  # noqa: E731
    (x0, _), (x1, _) = d.train, d.test
    train, test = binary(x0), binary(x1)

    def nll(p, b):
        h = jax.nn.relu(b[0] @ (p[0]["w"] * mask1) + p[0]["b"])
        logits = h @ (p[1]["w"] * mask2) + p[1]["b"]
        per_pixel = optax.sigmoid_binary_cross_entropy(logits, b[0])
        return jnp.mean(jnp.sum(per_pixel, -1))

    return Task(
        "MADE on binarised digits", (train, train), (test, test),
        init_mlp(jr.key(487), (64, hidden, 64)), nll, nll, "test NLL (nats)", 64,
    )  # fmt: skip


def transe_task(entities: int = 300, relations: int = 12, dim: int = 16):
    """TransE knowledge-graph embeddings (Bordes et al. 2013): an entity table
    and a relation table, scored by the distance between head + relation and
    tail, both entity vectors normalised to unit length in the score; trained by
    a margin (hinge) loss of 1 against four corrupted tails per triple (drawn
    once with the data), so a triple that is already ranked with margin gives no
    gradient. Triples from a hidden 8-D TransE model. Test metric: the fraction
    of test triples whose true tail beats all four corrupted ones."""
    rng = np.random.default_rng(491)
    true_e = rng.normal(size=(entities, 8))
    true_e /= np.linalg.norm(true_e, axis=1, keepdims=True)
    true_r = 0.5 * rng.normal(size=(relations, 8))
    h = rng.integers(0, entities, 6000)
    r = rng.integers(0, relations, 6000)
    scores = np.linalg.norm(
        (true_e[h] + true_r[r])[:, None] - true_e[None], axis=-1
    )  # (triples, entities)
    scores[np.arange(6000), h] = np.inf  # no self-loops
    t = scores.argmin(1)
    neg = rng.integers(0, entities, (6000, 4))
    x = np.concatenate([h[:, None], r[:, None], neg], 1).astype(np.int32)
    ks = jr.split(jr.key(499), 2)
    params = {
        "entity": jr.normal(ks[0], (entities, dim)) / np.sqrt(dim),
        "relation": jr.normal(ks[1], (relations, dim)) / np.sqrt(dim),
    }

    def distances(p, b):
        unit = p["entity"] / jnp.linalg.norm(p["entity"], axis=-1, keepdims=True)
        head = unit[b[0][:, 0]] + p["relation"][b[0][:, 1]]
        tails = jnp.concatenate([b[1][:, None], b[0][:, 2:]], 1)  # true first
        return jnp.linalg.norm(head[:, None] - unit[tails], axis=-1)

    def loss(p, b):
        dist = distances(p, b)
        return jnp.mean(jax.nn.relu(1.0 + dist[:, :1] - dist[:, 1:]))

    def accuracy(p, b):
        dist = distances(p, b)
        return jnp.mean(jnp.all(dist[:, :1] < dist[:, 1:], axis=1))

    return Task(
        "TransE knowledge graph", (x[:5000], t[:5000].astype(np.int32)),
        (x[5000:], t[5000:].astype(np.int32)), params, loss, accuracy,
        "test accuracy against 4 corrupted tails", 64,
    )  # fmt: skip


def td_task(states: int = 400, features: int = 16, gamma: float = 0.9):
    """Value learning by semi-gradient TD(0): a 16-64-1 tanh MLP V of a state's
    features, trained on sampled transitions (s, r, s') of a random Markov
    chain (each state moves to one of five others) by (r + 0.9 V(s') - V(s))^2
    with the bootstrapped target held constant (`stop_gradient`): the target
    moves with the parameters, so the objective is not a fixed function. Test
    metric: the MSE of V against the chain's exact values, (I - 0.9 P)^-1 r."""
    rng = np.random.default_rng(503)
    phi = rng.normal(size=(states, features)).astype(np.float32)
    nxt = rng.integers(0, states, (states, 5))
    reward = np.tanh(phi[:, 0] + phi[:, 1] * phi[:, 2]) + 0.2 * rng.normal(size=states)
    p = np.zeros((states, states))
    np.add.at(p, (np.repeat(np.arange(states), 5), nxt.ravel()), 0.2)
    value = np.linalg.solve(np.eye(states) - gamma * p, reward).astype(np.float32)
    s = rng.integers(0, states, 6000)
    s2 = nxt[s, rng.integers(0, 5, 6000)]
    r = (reward[s] + 0.5 * rng.normal(size=6000)).astype(np.float32)
    x = np.concatenate([phi[s], phi[s2]], 1)
    v = lambda p, f: mlp(p, f)[:, 0]  # noqa: E731

    def td_error(p, b):
        target = b[1] + gamma * jax.lax.stop_gradient(v(p, b[0][:, features:]))
        return jnp.mean((target - v(p, b[0][:, :features])) ** 2)

    def value_mse(p, b):
        return jnp.mean((v(p, b[0]) - b[1]) ** 2)

    return Task(
        "TD(0) value learning", (x, r), (phi, value),
        init_mlp(jr.key(509), (features, 64, 1)), td_error, value_mse,
        "test MSE to the exact values", 64,
    )  # fmt: skip


def ctc_task(frames: int = 24, symbols: int = 5, dim: int = 12):
    """A frame classifier trained by CTC (connectionist temporal classification,
    `optax.ctc_loss`): sequences of 3-5 symbols of five, each held for 2-4
    frames of noisy features (a fixed random code per symbol plus noise of sd
    0.7, blank frames between), padded to 24 frames; a 36-64-6 tanh MLP on each
    frame with its two neighbours gives per-frame logits (blank first), and
    the loss sums over every alignment of the labels to the frames. Test metric:
    the test CTC loss per sequence."""
    rng = np.random.default_rng(521)
    n = 3000
    code = rng.normal(size=(symbols, dim))
    x = np.zeros((n, frames, dim + 1), np.float32)  # last channel: padding
    y = np.zeros((n, 5), np.int32)  # labels 1..5, 0 = padding
    for i in range(n):
        seq = rng.integers(1, symbols + 1, rng.integers(3, 6))
        t = 0
        for j, c in enumerate(seq):
            t += 1  # a blank frame before each symbol
            hold = rng.integers(2, 5)
            x[i, t : t + hold, :dim] = code[c - 1]
            t += hold
            y[i, j] = c
        x[i, :, :dim] += 0.7 * rng.normal(size=(frames, dim))
        x[i, t:, dim] = 1.0
    x[:, :, :dim] *= 1 - x[:, :, dim:]

    def logits(p, xs):
        f = xs[..., :dim]
        before = jnp.pad(f, ((0, 0), (1, 0), (0, 0)))[:, :-1]
        after = jnp.pad(f, ((0, 0), (0, 1), (0, 0)))[:, 1:]
        return mlp(p, jnp.concatenate([before, f, after], -1))

    def loss(p, b):
        per = optax.ctc_loss(
            logits(p, b[0]), b[0][..., dim], b[1], (b[1] == 0).astype(jnp.float32)
        )
        return jnp.mean(per)

    return Task(
        "CTC frame classifier", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        init_mlp(jr.key(523), (3 * dim, 64, symbols + 1)), loss, loss,
        "test CTC loss", 32,
    )  # fmt: skip


def sparse_ae_task(code: int = 128, penalty: float = 0.05):
    """A sparse autoencoder on digits: a 64-128 ReLU encoder, a linear 128-64
    decoder, the squared reconstruction error per image plus 0.05 x the code's
    L1 norm (an overcomplete code pushed to few active units: a kink at 0 in the
    loss, units that can die). Test metric: the test loss."""
    d = ro.load_digits()
    k1, k2 = jr.split(jr.key(541))
    params = {"enc": init_mlp(k1, (64, code))[0], "dec": init_mlp(k2, (code, 64))[0]}

    def loss(p, b):
        h = jax.nn.relu(b[0] @ p["enc"]["w"] + p["enc"]["b"])
        x_hat = h @ p["dec"]["w"] + p["dec"]["b"]
        err = jnp.sum((x_hat - b[0]) ** 2, -1)
        return jnp.mean(err + penalty * jnp.sum(jnp.abs(h), -1))

    return Task(
        "sparse autoencoder", d.train, d.test, params, loss, loss, "test loss", 64,
    )  # fmt: skip


def mixup_task(alpha: float = 0.4):
    """Mixup (Zhang et al. 2018) on digits: each example mixed with another of
    its batch by a weight ~ Beta(0.4, 0.4) drawn per batch (from its inputs, so
    the same for every method), the cross-entropy mixed alike; a 64-128-10 tanh
    MLP. The targets are soft and drawn afresh: a noisy loss with a high floor.
    Test metric: accuracy on unmixed test images."""
    d = ro.load_digits()

    def loss(p, b):
        k1, k2 = jr.split(_key_of(b[0]))
        lam = jr.beta(k1, alpha, alpha, (len(b[0]), 1))
        other = jr.permutation(k2, len(b[0]))
        logits = mlp(p, lam * b[0] + (1 - lam) * b[0][other])
        lam = lam[:, 0]
        return jnp.mean(
            lam * _ce_each(logits, b[1]) + (1 - lam) * _ce_each(logits, b[1][other])
        )

    return Task(
        "digits with mixup", d.train, d.test, init_mlp(jr.key(547), (64, 128, 10)),
        loss, _accuracy(mlp), "test accuracy", 64,
    )  # fmt: skip


def _ce_each(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def parity_task(bits: int = 24, k: int = 3, flip: float = 0.05):
    """Sparse parity (Barak et al. 2022): inputs of 24 random signs, the label
    the product of the first three, 5 % of the training labels flipped; a
    24-256-2 ReLU MLP under cross-entropy. Gradient descent sits on a plateau
    at chance until the three bits are found, then the loss drops at once (to
    the flips' entropy, 0.199): a signal that says nothing for a long stretch.
    Test metric: accuracy on clean labels."""
    rng = np.random.default_rng(557)
    x = rng.choice([-1.0, 1.0], size=(5000, bits)).astype(np.float32)
    y = (np.prod(x[:, :k], 1) > 0).astype(np.int32)
    noisy = np.where(rng.random(4000) < flip, 1 - y[:4000], y[:4000])
    net = functools.partial(mlp, activation=jax.nn.relu)
    return Task(
        "sparse parity", (x[:4000], noisy), (x[4000:], y[4000:]),
        init_mlp(jr.key(563), (bits, 256, 2)),
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net),
        "test accuracy", 64,
    )  # fmt: skip


def phase_retrieval_task(dim: int = 32, m: int = 512):
    """Phase retrieval: a vector x in R^32 recovered from m = 512 squared
    projections y = (a^T x*)^2 + noise (sd 0.05), loss mean(((a^T x)^2 - y)^2)
    / 4 from a small random start (a quartic with a saddle at 0 and both signs
    of x* as minima: curvature that grows with |x|). Test metric: the loss on
    fresh projections."""
    rng = np.random.default_rng(569)
    x_star = rng.normal(size=dim) / np.sqrt(dim)
    a = rng.normal(size=(m + 512, dim)).astype(np.float32)
    y = ((a @ x_star) ** 2 + 0.05 * rng.normal(size=m + 512)).astype(np.float32)
    start = {"x": 0.01 * jr.normal(jr.key(571), (dim,))}

    def loss(p, b):
        return jnp.mean(((b[0] @ p["x"]) ** 2 - b[1]) ** 2) / 4

    return Task(
        "phase retrieval", (a[:m], y[:m]), (a[m:], y[m:]), start, loss, loss,
        "test loss", 64,
    )  # fmt: skip


def equilibrium_task(width: int = 64, iterations: int = 12):
    """A deep-equilibrium-style classifier on digits: z <- tanh(W z + U x + c)
    iterated 12 times from 0 (unrolled, weights shared across iterations), then
    a linear head; the gradient flows through every iteration, and grows where
    W's gain passes 1 (W starts at gain 0.5). Test metric: accuracy."""
    d = ro.load_digits()
    k1, k2, k3 = jr.split(jr.key(577), 3)
    params = {
        "w": 0.5 * jr.normal(k1, (width, width)) / jnp.sqrt(width),
        "u": jr.normal(k2, (64, width)) / 8.0,
        "c": jnp.zeros(width),
        "head": init_mlp(k3, (width, 10))[0],
    }

    def logits(p, x):
        ux = x @ p["u"] + p["c"]
        z = jnp.zeros((x.shape[0], width))
        for _ in range(iterations):
            z = jnp.tanh(z @ p["w"] + ux)
        return z @ p["head"]["w"] + p["head"]["b"]

    return Task(
        "unrolled equilibrium net", d.train, d.test, params,
        lambda p, b: _ce(logits(p, b[0]), b[1]), _accuracy(logits),
        "test accuracy", 64,
    )  # fmt: skip


def weight_norm_task(hidden: int = 128):
    """Weight normalisation (Salimans & Kingma 2016) on digits: each unit's
    weights w = g v / |v|, a 64-128-128-10 tanh MLP. The loss does not change
    when v is scaled, so its gradient is orthogonal to v and each step grows
    |v|: an lr on v shrinks in effect as the run goes, by an amount set by the
    lr itself. Test metric: accuracy."""
    d = ro.load_digits()
    sizes = (64, hidden, hidden, 10)
    keys = jr.split(jr.key(587), len(sizes) - 1)
    params = [
        {"v": jr.normal(k, (a, b)), "g": jnp.ones(b), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]

    def net(p, x):
        for i, layer in enumerate(p):
            w = layer["g"] * layer["v"] / jnp.linalg.norm(layer["v"], axis=0)
            x = x @ w + layer["b"]
            x = jnp.tanh(x) if i < len(p) - 1 else x
        return x

    return Task(
        "weight-normalised MLP", d.train, d.test, params,
        lambda p, b: _ce(net(p, b[0]), b[1]), _accuracy(net),
        "test accuracy", 64,
    )  # fmt: skip


def wavenet_task(channels: int = 16, dilations: tuple = (1, 2, 4, 8, 16)):
    """A WaveNet-style stack (van den Oord et al. 2016) predicting the next value
    of a noisy signal (two sines of random frequencies plus an AR(1) process),
    from 64 past values: causal convolutions of width 2 with dilations 1-16,
    gated units tanh(a) * sigmoid(b), residual and skip connections, a 1x1
    read-out; MSE on the next value at every position. Gated units multiply two
    paths, and the dilated stack spans 32 steps. Test metric: test MSE."""
    rng = np.random.default_rng(593)
    n, length = 1200, 65
    t = np.arange(length, dtype=np.float32)
    f = rng.uniform(0.05, 0.3, (n, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 2, 1))
    ar = np.zeros((n, length), np.float32)
    eps = rng.normal(size=(n, length)).astype(np.float32)
    for i in range(1, length):
        ar[:, i] = 0.8 * ar[:, i - 1] + 0.3 * eps[:, i]
    x = (np.sin(2 * np.pi * f * t + phase).sum(1) / 2 + ar).astype(np.float32)
    keys = jr.split(jr.key(599), 2 * len(dilations) + 2)
    c = channels
    params = {
        "inp": {"w": jr.normal(keys[0], (1, c)), "b": jnp.zeros(c)},
        "blocks": [
            {
                "conv": jr.normal(keys[2 * i + 1], (2, c, 2 * c)) / jnp.sqrt(2 * c),
                "b": jnp.zeros(2 * c),
                "out": jr.normal(keys[2 * i + 2], (c, 2 * c)) / jnp.sqrt(c),
            }
            for i in range(len(dilations))
        ],
        "head": {"w": jr.normal(keys[-1], (c, 1)) / jnp.sqrt(c), "b": jnp.zeros(1)},
    }

    def predict(p, seq):  # seq (batch, 64) -> predictions of seq[:, 1:65]
        h = seq[..., None] @ p["inp"]["w"] + p["inp"]["b"]
        skip = 0.0
        for block, d in zip(p["blocks"], dilations):
            past = jnp.pad(h, ((0, 0), (d, 0), (0, 0)))[:, : h.shape[1]]
            a = past @ block["conv"][0] + h @ block["conv"][1] + block["b"]
            z = jnp.tanh(a[..., :c]) * jax.nn.sigmoid(a[..., c:])
            out = z @ block["out"]
            h, skip = h + out[..., :c], skip + out[..., c:]
        return (jax.nn.relu(skip) @ p["head"]["w"] + p["head"]["b"])[..., 0]

    def loss(p, b):
        return jnp.mean((predict(p, b[0][:, :-1]) - b[0][:, 1:]) ** 2)

    return Task(
        "WaveNet next-value prediction", (x[:1000], x[:1000, :1]),
        (x[1000:], x[1000:, :1]), params, loss, loss, "test MSE", 32,
    )  # fmt: skip


def mdn_task(components: int = 5):
    """A mixture density network (Bishop 1994) on the inverse of
    x = y + 0.3 sin(2 pi y) + noise (y uniform on [0, 1], noise of standard
    deviation 0.15; both standardised): y given x has up to three branches, which
    a mean cannot fit. A 1-32-32-15 tanh MLP gives 5 mixture weights, means and
    log standard deviations; the loss is the mixture's negative log-likelihood
    (components that collapse onto few points have large gradients). Test
    metric: test NLL."""
    rng = np.random.default_rng(601)
    n = 3000
    y = rng.uniform(0, 1, (n, 1))
    x = y + 0.3 * np.sin(2 * np.pi * y) + 0.15 * rng.normal(size=(n, 1))
    # Both standardised; the noise keeps y's conditional entropy, the floor of the
    # loss, above 0 (a loss the ratios to tuned Adam can be taken of).
    x, y = ((a - a.mean()) / a.std() for a in (x, y))
    x, y = x.astype(np.float32), y.astype(np.float32)
    params = init_mlp(jr.key(607), (1, 32, 32, 3 * components))

    def nll(p, b):
        out = mlp(p, b[0])
        logit, mean, log_sd = jnp.split(out, 3, axis=-1)
        z = (b[1] - mean) * jnp.exp(-log_sd)
        log_comp = -0.5 * z**2 - log_sd - 0.5 * np.log(2 * np.pi)
        log_w = jax.nn.log_softmax(logit, -1)
        return -jnp.mean(jax.nn.logsumexp(log_w + log_comp, -1))

    return Task(
        "mixture density network", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        params, nll, nll, "test NLL", 64,
    )  # fmt: skip


def additive_task(hidden: int = 16):
    """A neural additive model (Agarwal et al. 2021) on diabetes (standardised
    inputs and targets): one 1-16-16-1 ReLU MLP per feature (the ten stacked in
    arrays with a leading feature axis), their outputs summed with a bias; MSE.
    Ten small networks whose inputs differ in how much they explain, sharing
    each array. Test metric: test MSE."""
    x, y = _diabetes()
    f = x.shape[1]
    keys = jr.split(jr.key(613), 3)
    params = {
        "l1": {"w": jr.normal(keys[0], (f, 1, hidden)), "b": jnp.zeros((f, hidden))},
        "l2": {
            "w": jr.normal(keys[1], (f, hidden, hidden)) / jnp.sqrt(hidden),
            "b": jnp.zeros((f, hidden)),
        },
        "l3": {"w": jr.normal(keys[2], (f, hidden)) / jnp.sqrt(hidden)},
        "bias": jnp.zeros([]),
    }

    def predict(p, x):  # x (batch, f)
        h = jax.nn.relu(x[..., None] * p["l1"]["w"][:, 0] + p["l1"]["b"])
        h = jax.nn.relu(jnp.einsum("nfi,fij->nfj", h, p["l2"]["w"]) + p["l2"]["b"])
        return jnp.einsum("nfj,fj->n", h, p["l3"]["w"]) + p["bias"]

    loss = lambda p, b: jnp.mean((predict(p, b[0]) - b[1]) ** 2)  # noqa: E731
    return Task(
        "neural additive model", (x[:350], y[:350]), (x[350:], y[350:]), params,
        loss, loss, "test MSE", 32,
    )  # fmt: skip


def soft_tree_task(depth: int = 5):
    """A soft decision tree (Frosst & Hinton 2017) on digits: 31 inner nodes,
    each routing an image left with probability sigmoid(w . x + b), 32 leaves
    each holding a distribution over the ten classes; the loss is the negative
    log of the probability the leaves, weighted by the path probabilities, give
    the label. Products of sigmoids along each path: a gradient that vanishes
    where a node's routing saturates. Test metric: accuracy."""
    d = ro.load_digits()
    inner, leaves = 2**depth - 1, 2**depth
    k1, k2 = jr.split(jr.key(617))
    params = {
        "route": {"w": jr.normal(k1, (64, inner)) / 8.0, "b": jnp.zeros(inner)},
        "leaves": 0.1 * jr.normal(k2, (leaves, 10)),
    }

    def path_log_probs(p, x):  # (batch, leaves)
        s = x @ p["route"]["w"] + p["route"]["b"]
        left, right = jax.nn.log_sigmoid(s), jax.nn.log_sigmoid(-s)
        logp = jnp.zeros((x.shape[0], 1))
        for level in range(depth):
            first = 2**level - 1
            nodes = slice(first, first + 2**level)
            logp = jnp.stack([logp + left[:, nodes], logp + right[:, nodes]], -1)
            logp = logp.reshape(x.shape[0], -1)
        return logp

    def log_probs(p, x):  # (batch, 10)
        leaf = jax.nn.log_softmax(p["leaves"], -1)
        return jax.nn.logsumexp(path_log_probs(p, x)[..., None] + leaf, axis=1)

    def loss(p, b):
        return -jnp.mean(jnp.take_along_axis(log_probs(p, b[0]), b[1][:, None], 1))

    return Task(
        "soft decision tree", d.train, d.test, params, loss, _accuracy(log_probs),
        "test accuracy", 64,
    )  # fmt: skip


def kan_task(grid: int = 8):
    """A Kolmogorov-Arnold network (Liu et al. 2024), 4-8-1, on
    f(x) = exp(sin(pi x1) + x2^2) + x3 x4 (x uniform on [-1, 1]^4, noise of
    standard deviation 0.05, y standardised): each edge a learned function, a
    SiLU term plus a weighted sum of 8 Gaussian bumps on a fixed grid over
    [-1, 1] (the hidden values squashed by tanh onto it). Coefficients of local
    basis functions: each gets a gradient only where inputs fall near its bump.
    Test metric: test MSE."""
    rng = np.random.default_rng(701)
    x = rng.uniform(-1, 1, (3000, 4))
    y = np.exp(np.sin(np.pi * x[:, 0]) + x[:, 1] ** 2) + x[:, 2] * x[:, 3]
    y = y + 0.05 * rng.normal(size=len(y))
    x, y = x.astype(np.float32), ((y - y.mean()) / y.std()).astype(np.float32)
    centres, width = jnp.linspace(-1.0, 1.0, grid), 2.0 / (grid - 1)

    def init(key, a, b):
        k1, k2 = jr.split(key)
        base = jr.normal(k1, (a, b)) / jnp.sqrt(a)
        return {"base": base, "coef": 0.1 * jr.normal(k2, (a, grid, b)) / jnp.sqrt(a)}

    params = [
        init(k, a, b) for k, (a, b) in zip(jr.split(jr.key(703)), [(4, 8), (8, 1)])
    ]

    def layer(p, h):  # h (batch, a) -> (batch, b)
        bumps = jnp.exp(-(((h[..., None] - centres) / width) ** 2))
        return jax.nn.silu(h) @ p["base"] + jnp.einsum("nag,agb->nb", bumps, p["coef"])

    def loss(p, b):
        out = layer(p[1], jnp.tanh(layer(p[0], b[0])))[:, 0]
        return jnp.mean((out - b[1]) ** 2)

    return Task(
        "Kolmogorov-Arnold network", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        params, loss, loss, "test MSE", 32,
    )  # fmt: skip


def control_task(horizon: int = 40):
    """A policy trained through a simulated rollout (differentiable control): a
    3-32-1 tanh MLP maps a pendulum's (sin, cos of the angle, angular velocity)
    to a torque (4 tanh(.)); 40 Euler steps of dt 0.05 (gravity 10, damping
    0.1); the loss the mean over the rollout of 1 + cos(angle) (0 upright) +
    0.05 velocity^2 + 0.001 torque^2, from initial states drawn at random (the
    batch). A gradient through a 40-step nonlinear recursion whose torque
    limit (4 < 10) needs swinging. Test metric: the cost from held-out states."""
    rng = np.random.default_rng(709)
    x = np.stack(
        [rng.uniform(-np.pi, np.pi, 2500), rng.uniform(-1, 1, 2500)], 1
    ).astype(np.float32)
    y = np.zeros(2500, np.float32)
    params = init_mlp(jr.key(711), (3, 32, 1))

    def loss(p, b):
        def step(state, _):
            angle, velocity = state
            feats = jnp.stack([jnp.sin(angle), jnp.cos(angle), velocity], -1)
            torque = 4.0 * jnp.tanh(mlp(p, feats)[:, 0])
            cost = 1 + jnp.cos(angle) + 0.05 * velocity**2 + 1e-3 * torque**2
            accel = -10.0 * jnp.sin(angle) - 0.1 * velocity + torque
            return (angle + 0.05 * velocity, velocity + 0.05 * accel), cost

        _, costs = jax.lax.scan(step, (b[0][:, 0], b[0][:, 1]), None, horizon)
        return jnp.mean(costs)

    return Task(
        "pendulum policy through a rollout", (x[:2000], y[:2000]),
        (x[2000:], y[2000:]), params, loss, loss, "test cost", 64,
    )  # fmt: skip


def binary_task():
    """A binary-weight MLP (BinaryConnect, Courbariaux et al. 2015) on digits,
    64-128-10: the forward pass uses each layer's weights as sign(w) times their
    mean |w|, the gradient passes the sign as if it were the identity (the
    straight-through estimator), so the optimiser steps real-valued latent
    weights along a gradient that is not the loss's. Biases real. Test metric:
    accuracy."""
    d = ro.load_digits()

    def binarised(p):
        def one(w):
            scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(w)))
            return w + jax.lax.stop_gradient(jnp.sign(w) * scale - w)

        return [{"w": one(layer["w"]), "b": layer["b"]} for layer in p]

    predict = lambda p, x: mlp(binarised(p), x)  # noqa: E731
    loss = lambda p, b: _ce(predict(p, b[0]), b[1])  # noqa: E731
    return Task(
        "binary-weight MLP", d.train, d.test, init_mlp(jr.key(719), (64, 128, 10)),
        loss, _accuracy(predict), "test accuracy", 64,
    )  # fmt: skip


def ordinal_task(levels: int = 6):
    """Ordinal regression with a cumulative logit (McCullagh 1980): a 10-32-1 tanh
    MLP's score s and five ordered cut points (the first free, then cumulative
    softplus increments); P(y <= k) = sigmoid(c_k - s), the loss the observed
    level's negative log-likelihood. Data: a latent nonlinear score of 10
    standard normal features plus logistic noise, cut at its sextiles into 6
    levels. Cut points and weights are different kinds of parameter, sharing
    one loss. Test metric: mean absolute error of the most probable level."""
    rng = np.random.default_rng(727)
    n = 3000
    x = rng.normal(size=(n, 10))
    latent = np.sin(x[:, 0]) * 2 + x[:, 1] * x[:, 2] + x[:, 3] - 0.5 * x[:, 4] ** 2
    latent = latent + rng.logistic(size=n) * 0.5
    y = np.searchsorted(
        np.quantile(latent, np.linspace(0, 1, levels + 1)[1:-1]), latent
    )
    x, y = x.astype(np.float32), y.astype(np.int32)
    params = {
        "mlp": init_mlp(jr.key(733), (10, 32, 1)),
        "first": jnp.zeros(()),
        "gaps": jnp.zeros(levels - 2),
    }

    def log_probs(p, x):  # (batch, levels)
        cuts = p["first"] + jnp.concatenate(
            [jnp.zeros(1), jnp.cumsum(jax.nn.softplus(p["gaps"]))]
        )
        below = jax.nn.sigmoid(cuts - mlp(p["mlp"], x))  # P(y <= k), (batch, 5)
        ones = jnp.ones((x.shape[0], 1))
        cdf = jnp.concatenate([jnp.zeros_like(ones), below, ones], -1)
        return jnp.log(jnp.maximum(jnp.diff(cdf, axis=-1), 1e-12))

    def loss(p, b):
        return -jnp.mean(jnp.take_along_axis(log_probs(p, b[0]), b[1][:, None], 1))

    def error(p, b):
        return jnp.mean(jnp.abs(jnp.argmax(log_probs(p, b[0]), -1) - b[1]))

    return Task(
        "ordinal regression", (x[:2500], y[:2500]), (x[2500:], y[2500:]), params,
        loss, error, "test mean absolute error", 64,
    )  # fmt: skip


def stax_mlp_task(sizes=(64, 256, 256, 10), scale: float = 1e-2):
    """The MLP of JAX's own tutorials, written as they write it: parameters a
    list of `(w, b)` tuples, every weight and bias drawn as 0.01 x a standard
    normal (their `random_layer_params`), ReLU hidden layers, a log-softmax
    output; digits, 64-256-256-10. The small initialisation starts the network
    with an output near zero, and the tuples are the layout `per="layer"`
    groups since 2026-12-07 (one lr per `(w, b)`). Test metric: accuracy."""
    d = ro.load_digits()
    keys = jr.split(jr.key(739), 2 * (len(sizes) - 1))
    params = [
        (scale * jr.normal(kw, (m, n)), scale * jr.normal(kb, (n,)))
        for kw, kb, m, n in zip(keys[::2], keys[1::2], sizes[:-1], sizes[1:])
    ]

    def predict(p, x):
        for w, b in p[:-1]:
            x = jax.nn.relu(x @ w + b[None])
        w, b = p[-1]
        return jax.nn.log_softmax(x @ w + b[None])

    def loss(p, b):
        return -jnp.mean(jnp.take_along_axis(predict(p, b[0]), b[1][:, None], 1))

    return Task(
        "tutorial MLP, (w, b) tuples", d.train, d.test, params, loss,
        _accuracy(predict), "test accuracy", 128,
    )  # fmt: skip


def rbf_task(centres: int = 30):
    """A radial-basis-function network (Broomhead and Lowe 1988) fitting Franke's
    function on the unit square from 2000 noisy samples (noise 0.02): 30 learned
    centres (started uniform on the square), a learned log-width per centre
    (started at log 0.2), output weights and a bias (started at 0). Centres,
    widths and weights are parameters of three kinds and scales, each an array
    under the root (so each its own layer). Test metric: MSE."""
    rng = np.random.default_rng(743)
    x = rng.uniform(size=(2000, 2))
    a, b = 9 * x[:, 0], 9 * x[:, 1]
    y = (
        0.75 * np.exp(-((a - 2) ** 2) / 4 - (b - 2) ** 2 / 4)
        + 0.75 * np.exp(-((a + 1) ** 2) / 49 - (b + 1) / 10)
        + 0.5 * np.exp(-((a - 7) ** 2) / 4 - (b - 3) ** 2 / 4)
        - 0.2 * np.exp(-((a - 4) ** 2) - (b - 7) ** 2)
    )
    y = y + 0.02 * rng.normal(size=y.shape)
    x, y = x.astype(np.float32), y.astype(np.float32)
    params = {
        "centres": jnp.asarray(rng.uniform(size=(centres, 2)), jnp.float32),
        "log_width": jnp.full(centres, np.log(0.2), jnp.float32),
        "w": jnp.zeros(centres),
        "b": jnp.zeros(()),
    }

    def predict(p, x):
        d2 = jnp.sum((x[:, None, :] - p["centres"][None]) ** 2, -1)
        phi = jnp.exp(-d2 / (2 * jnp.exp(2 * p["log_width"]))[None])
        return phi @ p["w"] + p["b"]

    def loss(p, b):
        return jnp.mean((predict(p, b[0]) - b[1]) ** 2)

    return Task(
        "RBF network, Franke's function", (x[:1600], y[:1600]), (x[1600:], y[1600:]),
        params, loss, loss, "test MSE", 64,
    )  # fmt: skip


def tabular_task(cards=(50, 20, 8), dims=(8, 4, 4), numeric: int = 5):
    """A tabular classifier of the usual kind: one embedding table per categorical
    column (cardinalities 50, 20 and 8; widths 8, 4, 4), concatenated with five
    numeric features into a 21-64-64-2 ReLU MLP, cross-entropy. Synthetic data
    (6000 rows): the label drawn from a logistic model with a random effect per
    category, one category's effect scaling a numeric feature, and nonlinear
    numeric terms. Embedding rows of rare categories get few gradients. Test
    metric: accuracy."""
    rng = np.random.default_rng(751)
    n = 6000
    cats = np.stack([rng.zipf(1.6, size=n) % c for c in cards], -1).astype(
        np.int32
    )  # skewed category frequencies
    nums = rng.normal(size=(n, numeric)).astype(np.float32)
    effects = [rng.normal(size=c) for c in cards]
    z = (
        effects[0][cats[:, 0]]
        + effects[1][cats[:, 1]] * nums[:, 0]
        + effects[2][cats[:, 2]]
        + 2 * np.sin(nums[:, 1])
        + nums[:, 2] * nums[:, 3]
    )
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(np.int32)
    keys = jr.split(jr.key(757), len(cards) + 1)
    params = {
        "emb": [0.1 * jr.normal(k, (c, e)) for k, c, e in zip(keys, cards, dims)],
        "mlp": init_mlp(keys[-1], (sum(dims) + numeric, 64, 64, 2)),
    }

    def logits(p, x):  # x: the category ids (as floats), then the numerics
        c, v = x[:, : len(cards)].astype(jnp.int32), x[:, len(cards) :]
        h = jnp.concatenate([e[c[:, i]] for i, e in enumerate(p["emb"])] + [v], -1)
        return mlp(p["mlp"], h, jax.nn.relu)

    def loss(p, b):
        return _ce(logits(p, b[0]), b[1])

    x = np.concatenate([cats.astype(np.float32), nums], -1)
    return Task(
        "tabular embeddings + MLP", (x[:5000], y[:5000]), (x[5000:], y[5000:]),
        params, loss, _accuracy(logits), "test accuracy", 128,
    )  # fmt: skip


def tied_lm_task(context: int = 6, width: int = 32):
    """A character model whose input embedding is also its output layer (weight
    tying, Press and Wolf 2017): the last six characters' embeddings (width 32)
    through a tanh hidden layer of 128 and a projection back to width 32, the
    logits that against the same embedding table plus a bias per symbol. The
    table gets gradients from both ends. Text: four more standard-library files.
    Test metric: test loss."""
    files = ("difflib.py", "calendar.py", "fractions.py", "heapq.py")
    n, *data = char_windows(files, context, 150_000)
    k1, k2, k3 = jr.split(jr.key(761), 3)
    params = {
        "embed": 0.1 * jr.normal(k1, (n, width)),
        "hidden": init_mlp(k2, (context * width, 128))[0],
        "proj": init_mlp(k3, (128, width))[0],
        "bias": jnp.zeros(n),
    }

    def logits(p, x):
        h = p["embed"][x].reshape(x.shape[0], -1)
        h = jnp.tanh(h @ p["hidden"]["w"] + p["hidden"]["b"][None])
        out = h @ p["proj"]["w"] + p["proj"]["b"][None]
        return out @ p["embed"].T + p["bias"][None]

    return next_char_task(
        f"tied-embedding char model ({n} symbols)", data, params, logits, 128
    )


def grid_field_task(resolutions=(4, 8, 16, 32), features: int = 2):
    """A multiresolution grid encoding (dense, unhashed Instant-NGP; Mueller et al.
    2022) fitting a 2-D image: four learned feature grids (4x4 to 32x32, two
    features a cell, started at 1e-2 x a standard normal), bilinearly
    interpolated at each pixel's coordinates and concatenated into an 8-32-1 ReLU
    MLP. The image: rings and a checkerboard patch on the unit square, 64 x 64
    pixels; a random 80 % to train on, the rest to test. Each pixel moves only
    its cells' features, so the grids' gradients are sparse and of scales apart
    from the MLP's. Test metric: MSE on the held-out pixels."""
    n = 64
    u = (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(u, u, indexing="ij")
    r = np.hypot(xx - 0.4, yy - 0.45)
    image = 0.5 + 0.4 * np.sin(30 * r) * np.exp(-3 * r)
    patch = (xx > 0.65) & (yy > 0.6)
    image = np.where(
        patch, 0.5 + 0.4 * np.sign(np.sin(40 * xx) * np.sin(40 * yy)), image
    )
    coords = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
    values = image.ravel().astype(np.float32)
    order = np.random.default_rng(769).permutation(n * n)
    train, test = order[: int(0.8 * n * n)], order[int(0.8 * n * n) :]
    keys = jr.split(jr.key(773), len(resolutions) + 1)
    params = {
        "grids": [
            1e-2 * jr.normal(k, (g + 1, g + 1, features))
            for k, g in zip(keys, resolutions)
        ],
        "mlp": init_mlp(keys[-1], (features * len(resolutions), 32, 1)),
    }

    def bilinear(grid, x):  # (cells, cells, features) at x in the unit square
        pos = list((x * (grid.shape[0] - 1)).T)
        return jnp.stack(
            [map_coordinates(grid[..., k], pos, order=1) for k in range(features)], -1
        )

    def encode(grids, x):
        return jnp.concatenate([bilinear(grid, x) for grid in grids], -1)

    def loss(p, b):
        pred = mlp(p["mlp"], encode(p["grids"], b[0]), jax.nn.relu)[:, 0]
        return jnp.mean((pred - b[1]) ** 2)

    return Task(
        "grid-encoded image field", (coords[train], values[train]),
        (coords[test], values[test]), params, loss, loss, "test MSE", 256,
    )  # fmt: skip


def vqe_task(qubits: int = 6, layers: int = 4, field: float = 1.0):
    """A variational quantum eigensolver, simulated: a 6-qubit statevector from
    |0...0>, four layers of a Y rotation on each qubit followed by a chain of
    controlled-Z gates, then a last layer of Y rotations (30 angles, started at
    0.1 x a standard normal); the loss its energy under the transverse-field
    Ising Hamiltonian -sum Z_i Z_i+1 - sum X_i (open chain, field 1), less the
    exact ground energy (so the loss is >= 0). No data, no noise; the angles are
    periodic and the landscape has the plateaus of such circuits. Test metric:
    the same excess energy."""
    dim = 2**qubits
    bits = (np.arange(dim)[:, None] >> np.arange(qubits)[None, ::-1]) & 1
    z = 1 - 2 * bits  # Z eigenvalue of each qubit, per basis state
    zz = np.sum(z[:, :-1] * z[:, 1:], 1).astype(np.float64)
    cz = np.prod(np.where(bits[:, :-1] & bits[:, 1:], -1, 1), 1)  # the CZ chain
    flips = [np.arange(dim) ^ (1 << (qubits - 1 - q)) for q in range(qubits)]
    h = -np.diag(zz)
    for f in flips:
        h[np.arange(dim), f] -= field
    ground = float(np.linalg.eigvalsh(h)[0])
    zz, cz = jnp.asarray(zz, jnp.float32), jnp.asarray(cz, jnp.float32)
    flips = [jnp.asarray(f) for f in flips]
    dummy = _no_data(256)

    def ry(state, q, angle):  # a real rotation on qubit q
        c, s = jnp.cos(angle / 2), jnp.sin(angle / 2)
        sign = jnp.asarray(z[:, q], jnp.float32)  # +1 for |0>, -1 for |1>
        return c * state + s * sign * state[flips[q]]

    def energy(p, b):
        state = jnp.zeros(dim).at[0].set(1.0)
        for layer in range(layers + 1):
            for q in range(qubits):
                state = ry(state, q, p["angles"][layer, q])
            if layer < layers:
                state = cz * state
        x_part = sum(jnp.sum(state * state[f]) for f in flips)
        return jnp.sum(zz * state**2) * -1.0 - field * x_part - ground

    params = {"angles": 0.1 * jr.normal(jr.key(787), (layers + 1, qubits))}
    return Task("variational quantum eigensolver", dummy, dummy, params, energy,
                energy, "excess energy", 1)  # fmt: skip


def swiglu_task(width: int = 64, hidden: int = 128, blocks: int = 2):
    """A small modern MLP on digits: a linear embedding, two residual blocks of
    RMSNorm (a learned gain) and a SwiGLU feed-forward (Shazeer 2020: (silu(x W1)
    * x W3) W2, no biases), a final RMSNorm and a linear head; each block a dict,
    so its gain and its three matrices are one layer. Test metric: accuracy."""
    d = ro.load_digits()
    keys = iter(jr.split(jr.key(797), 3 * blocks + 2))
    params = {
        "embed": init_mlp(next(keys), (64, width))[0],
        "blocks": [
            {
                "gain": jnp.ones(width),
                "w1": jr.normal(next(keys), (width, hidden)) / np.sqrt(width),
                "w3": jr.normal(next(keys), (width, hidden)) / np.sqrt(width),
                "w2": jr.normal(next(keys), (hidden, width)) / np.sqrt(hidden),
            }
            for _ in range(blocks)
        ],
        "final_gain": jnp.ones(width),
        "head": init_mlp(next(keys), (width, 10))[0],
    }

    def rms(x, gain):
        return x * jax.lax.rsqrt(jnp.mean(x**2, -1, keepdims=True) + 1e-6) * gain

    def logits(p, x):
        h = x @ p["embed"]["w"] + p["embed"]["b"][None]
        for blk in p["blocks"]:
            u = rms(h, blk["gain"][None])
            h = h + (jax.nn.silu(u @ blk["w1"]) * (u @ blk["w3"])) @ blk["w2"]
        h = rms(h, p["final_gain"][None])
        return h @ p["head"]["w"] + p["head"]["b"][None]

    return Task(
        "SwiGLU residual MLP", d.train, d.test, params,
        lambda p, b: _ce(logits(p, b[0]), b[1]), _accuracy(logits),
        "test accuracy", 128,
    )  # fmt: skip


def sysid_task(horizon: int = 60, dt: float = 0.05):
    """System identification: the four constants of a damped Duffing oscillator
    (x'' = -c x' - k x - beta x^3 + a cos(t)) fitted to observed trajectories
    through a 60-step Euler rollout. True k = 4, c = 0.3, beta = 1, a = 0.5;
    the model holds log k, log c, beta and a as scalars under the root (each its
    own layer), started at k = 1, c = 1, beta = 0, a = 0. The batch: trajectories
    from random initial states, observed with noise 0.01. A handful of
    physical parameters whose gradients come through a recursion. Test metric:
    the trajectory MSE from held-out initial states."""
    rng = np.random.default_rng(809)

    def rollout(consts, x0, v0):
        k, c, beta, a = consts

        def step(state, t):
            x, v = state
            acc = -c * v - k * x - beta * x**3 + a * jnp.cos(t * dt)
            return (x + dt * v, v + dt * acc), x

        _, xs = jax.lax.scan(step, (x0, v0), jnp.arange(horizon, dtype=jnp.float32))
        return xs.T  # (batch, horizon)

    starts = rng.uniform(-1.5, 1.5, size=(2500, 2)).astype(np.float32)
    true = (4.0, 0.3, 1.0, 0.5)
    traj = np.asarray(rollout(true, starts[:, 0], starts[:, 1]))
    traj = (traj + 0.01 * rng.normal(size=traj.shape)).astype(np.float32)
    x = np.concatenate([starts, traj], 1)  # the initial state, then the trajectory
    y = np.zeros(2500, np.float32)
    params = {
        "log_k": jnp.zeros(()),
        "log_c": jnp.zeros(()),
        "beta": jnp.zeros(()),
        "a": jnp.zeros(()),
    }

    def loss(p, b):
        consts = (jnp.exp(p["log_k"]), jnp.exp(p["log_c"]), p["beta"], p["a"])
        pred = rollout(consts, b[0][:, 0], b[0][:, 1])
        return jnp.mean((pred - b[0][:, 2:]) ** 2)

    return Task(
        "Duffing oscillator identification", (x[:2000], y[:2000]),
        (x[2000:], y[2000:]), params, loss, loss, "test trajectory MSE", 32,
    )  # fmt: skip


def crf_task(states: int = 5, symbols: int = 30, length: int = 16):
    """A linear-chain CRF tagger (Lafferty et al. 2001) on sequences sampled from a
    sticky hidden Markov model (5 states, 30 symbols with overlapping emission
    distributions, 16 steps): each position's emission scores from a window of
    three symbols (a learned embedding table, a 48-32 tanh layer, a 32-5 layer),
    a learned 5x5 transition matrix and start scores; the loss is the negative
    log-likelihood of the tags under the chain, with the partition function by the
    forward algorithm (a scan of log-sum-exps), per token. The transition matrix
    and start scores sit under the root, each a layer of its own. Test metric: the
    Viterbi path's token accuracy."""
    rng = np.random.default_rng(811)
    trans = 0.7 * np.eye(states) + 0.3 * rng.dirichlet(np.ones(states), states)
    emit = rng.dirichlet(0.3 * np.ones(symbols), states)
    n = 2000
    tags = np.zeros((n, length), np.int32)
    tags[:, 0] = rng.integers(0, states, n)
    for t in range(1, length):
        u = rng.random(n)[:, None]
        tags[:, t] = (u > np.cumsum(trans[tags[:, t - 1]], 1)).sum(1)
    u = rng.random((n, length))[..., None]
    obs = (u > np.cumsum(emit[tags], -1)).sum(-1).clip(0, symbols - 1).astype(np.int32)
    keys = jr.split(jr.key(821), 4)
    params = {
        "embed": 0.3 * jr.normal(keys[0], (symbols + 1, 16)),  # the last: padding
        "hidden": init_mlp(keys[1], (48, 32))[0],
        "out": init_mlp(keys[2], (32, states))[0],
        "trans": jnp.zeros((states, states)),
        "start": jnp.zeros(states),
    }

    def scores(p, x):  # (batch, length, states)
        pad = jnp.full((len(x), 1), symbols)
        win = jnp.concatenate([pad, x, pad], 1)
        e = p["embed"][jnp.stack([win[:, :-2], win[:, 1:-1], win[:, 2:]], -1)]
        h = jnp.tanh(e.reshape(*x.shape, 48) @ p["hidden"]["w"] + p["hidden"]["b"])
        return h @ p["out"]["w"] + p["out"]["b"]

    def nll(p, b):
        x, y = b
        s = scores(p, x)
        rows = jnp.arange(len(x))[:, None]
        gold = jnp.sum(s[rows, jnp.arange(length), y], 1) + p["start"][y[:, 0]]
        gold = gold + jnp.sum(p["trans"][y[:, :-1], y[:, 1:]], 1)

        def forward(alpha, s_t):
            alpha = jax.nn.logsumexp(alpha[:, :, None] + p["trans"], 1) + s_t
            return alpha, None

        alpha, _ = jax.lax.scan(
            forward, p["start"] + s[:, 0], jnp.moveaxis(s, 1, 0)[1:]
        )
        return jnp.mean(jax.nn.logsumexp(alpha, -1) - gold) / length

    def viterbi_accuracy(p, b):
        x, y = b
        s = jnp.moveaxis(scores(p, x), 1, 0)

        def best(delta, s_t):
            cand = delta[:, :, None] + p["trans"]  # (batch, from, to)
            return jnp.max(cand, 1) + s_t, jnp.argmax(cand, 1)

        delta, back = jax.lax.scan(best, p["start"] + s[0], s[1:])
        last = jnp.argmax(delta, -1)

        def trace(tag, bp):
            prev = jnp.take_along_axis(bp, tag[:, None], 1)[:, 0]
            return prev, tag

        first, path = jax.lax.scan(trace, last, back, reverse=True)
        path = jnp.concatenate([first[None], path], 0).T
        return jnp.mean(path == y)

    return Task(
        "linear-chain CRF tagger", (obs[:1500], tags[:1500]),
        (obs[1500:], tags[1500:]), params, nll, viterbi_accuracy,
        "test token accuracy", 32,
    )  # fmt: skip


def cellular_automaton_task(size: int = 16, channels: int = 8, steps: int = 24):
    """A neural cellular automaton (Mordvintsev et al. 2020, without the random
    updates): a 16x16 toroidal grid of 8 channels grown from one seeded cell; each
    step every cell perceives itself and its channels' Sobel gradients (24
    features) and adds the output of a 24-64-8 ReLU MLP (its last layer started
    at zero); after 24 steps channel 0 should draw a ring. The gradient flows back
    through the 24 steps, through the same weights at every step. No data, no
    noise. Test metric: channel 0's MSE after 32 steps (whether the pattern
    persists past the steps it was trained on)."""
    u = np.arange(size) - (size - 1) / 2
    r = np.hypot(*np.meshgrid(u, u, indexing="ij"))
    target = jnp.asarray(np.exp(-((r - 5.0) ** 2) / 2.0), jnp.float32)
    seed = jnp.zeros((size, size, channels)).at[size // 2, size // 2, 1:].set(1.0)
    dummy = _no_data(256)
    keys = jr.split(jr.key(829), 2)
    params = {
        "perceive": init_mlp(keys[0], (3 * channels, 64))[0],
        "update": {"w": jnp.zeros((64, channels)), "b": jnp.zeros(channels)},
    }

    def sobel(x, axis):  # central difference along `axis`, smoothed across it
        other = 1 - axis
        d = jnp.roll(x, -1, axis) - jnp.roll(x, 1, axis)
        return (jnp.roll(d, 1, other) + 2 * d + jnp.roll(d, -1, other)) / 8

    def grow(p, n):
        def step(x, _):
            feats = jnp.concatenate([x, sobel(x, 0), sobel(x, 1)], -1)
            h = jax.nn.relu(feats @ p["perceive"]["w"] + p["perceive"]["b"])
            return x + h @ p["update"]["w"] + p["update"]["b"], None

        return jax.lax.scan(step, seed, None, length=n)[0][..., 0]

    def loss(p, b):
        return jnp.mean((grow(p, steps) - target) ** 2)

    def persists(p, b):
        return jnp.mean((grow(p, 32) - target) ** 2)

    return Task("neural cellular automaton", dummy, dummy, params, loss, persists,
                "MSE after 32 steps", 1)  # fmt: skip


def two_tower_task(dim: int = 16, hidden: int = 64):
    """A CLIP-style two-tower model (Radford et al. 2021) on digits: the left four
    columns of each 8x8 image and the right four are encoded by two 32-64-16 tanh
    MLPs into unit vectors, scored by their dot product times a learned scale
    (the log of it a scalar under the root, started at log(1/0.07) and capped at
    log(100), as CLIP does), under a symmetric InfoNCE loss over the pairs of a
    batch of 64. Test metric: top-1 retrieval accuracy, each test image's left
    half against every test image's right half."""
    d = ro.load_digits()
    halves = lambda x: (x.reshape(-1, 8, 8)[:, :, :4].reshape(-1, 32),  # noqa: E731
                        x.reshape(-1, 8, 8)[:, :, 4:].reshape(-1, 32))  # fmt: skip
    keys = jr.split(jr.key(839), 2)
    params = {
        "left": init_mlp(keys[0], (32, hidden, dim)),
        "right": init_mlp(keys[1], (32, hidden, dim)),
        "log_scale": jnp.asarray(np.log(1 / 0.07), jnp.float32),
    }
    unit = lambda z: z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-6)  # noqa: E731

    def logits(p, b):
        a, c = unit(mlp(p["left"], b[0])), unit(mlp(p["right"], b[1]))
        return jnp.exp(jnp.minimum(p["log_scale"], np.log(100.0))) * a @ c.T

    def info_nce(p, b):
        z = logits(p, b)
        labels = jnp.arange(len(z))
        return (_ce(z, labels) + _ce(z.T, labels)) / 2

    def retrieval(p, b):
        z = logits(p, b)
        return jnp.mean(jnp.argmax(z, 1) == jnp.arange(len(z)))

    return Task("two-tower contrastive, learned temperature", halves(d.train[0]),
                halves(d.test[0]), params, info_nce, retrieval,
                "test top-1 retrieval accuracy", 64)  # fmt: skip


def cp_completion_task(shape=(20, 24, 28), rank: int = 3, fitted: int = 5):
    """Tensor completion by a CP decomposition (Hitchcock 1927; Kolda and Bader
    2009): a 20 x 24 x 28 tensor of rank 3 (factors standard normal / 3^(1/2),
    plus noise of sd 0.05), of which a random 25 % of entries are observed;
    three rank-5 factor matrices (started at 0.5 x a standard normal) fit them by
    squared error on batches of 128 entries. Trilinear, with the saddles and
    scaling symmetries of a factorisation; the three factors sit under the root,
    each a layer. Test metric: MSE on 10 % of the entries held out."""
    rng = np.random.default_rng(853)
    true = [rng.normal(size=(k, rank)) / np.sqrt(3) for k in shape]
    full = np.einsum("ir,jr,kr->ijk", *true)
    full = full + 0.05 * rng.normal(size=shape)
    order = rng.permutation(full.size)
    n_train, n_test = full.size // 4, full.size // 10
    ijk = np.stack(np.unravel_index(order, shape), 1).astype(np.int32)
    vals = full.reshape(-1)[order].astype(np.float32)
    keys = jr.split(jr.key(857), 3)
    params = {
        name: 0.5 * jr.normal(k, (n, fitted))
        for name, k, n in zip(("a", "b", "c"), keys, shape)
    }

    def loss(p, b):
        i, j, k = b[0][:, 0], b[0][:, 1], b[0][:, 2]
        pred = jnp.sum(p["a"][i] * p["b"][j] * p["c"][k], -1)
        return jnp.mean((pred - b[1]) ** 2)

    test = slice(n_train, n_train + n_test)
    return Task(
        "CP tensor completion", (ijk[:n_train], vals[:n_train]),
        (ijk[test], vals[test]), params, loss, loss, "test MSE", 128,
    )  # fmt: skip


TASKS = {
    "digits": digits_task,
    "cancer": breast_cancer_task,
    "char": char_task,
    "quadratic": quadratic_task,
    "cnn": cnn_task,
    "rnn": rnn_task,
    "lsq": least_squares_task,
    "regression": regression_task,
    "wine": wine_task,
}
EXTRA_TASKS = {"attention": attention_task}  # run by name only
# Seven tasks added after every default was chosen (`--tasks heldout`): a check
# of the defaults on problems they were not measured on while being chosen.
HELDOUT_TASKS = {
    "iris": iris_task,
    "diabetes": diabetes_task,
    "logistic": scaled_logistic_task,
    "deep": deep_relu_task,
    "autoencoder": autoencoder_task,
    "factorisation": factorisation_task,
    "noisy": noisy_quadratic_task,
}
# Six more kinds, added after the issue's defaults and the seven above: `--tasks
# probes`.
PROBE_TASKS = {
    "rosenbrock": rosenbrock_task,
    "label_noise": label_noise_task,
    "full_batch": full_batch_task,
    "teacher": teacher_student_task,
    "l1": l1_regression_task,
    "small_batch": small_batch_task,
}
# Five more, written after every choice above and run once each, to measure the
# defaults out of sample (`--tasks fresh`); nothing was chosen by looking at them.
FRESH_TASKS = {
    "sine": sine_task,
    "softmax": softmax_task,
    "moons": moons_task,
    "poisson": poisson_task,
    "layernorm": layernorm_task,
}
# Four more, written on 2026-12-02 before any run, to weigh level 2's momentum
# (0.5 or 0.9) on tasks that took no part in its choice (`--tasks fresh2`).
FRESH2_TASKS = {
    "deep_linear": deep_linear_task,
    "adding": adding_task,
    "conv1d": conv1d_task,
    "bag": bag_of_words_task,
}
# Four more, written on 2026-12-04 before any run and used for no choice: a
# further out-of-sample check of the defaults (`--tasks fresh3`).
FRESH3_TASKS = {
    "residual": residual_task,
    "multilabel": multilabel_task,
    "siren": siren_task,
    "wide": wide_task,
}
# Four more, written on 2026-12-04 (night) before any run and used for no
# choice, of kinds none of the above has (`--tasks fresh4`): two stochastic
# objectives (a VAE's reparametrised noise, dropout masks), a gated RNN, a robust
# loss on heavy-tailed noise.
FRESH4_TASKS = {
    "vae": vae_task,
    "dropout": dropout_task,
    "gru": gru_task,
    "huber": huber_task,
}
# Four more, written on 2026-12-05 before any run and used for no choice, of
# kinds none of the above has (`--tasks fresh5`): a loss through the network's
# second derivative (a physics-informed ODE), a loss over the pairs within a
# batch (InfoNCE), a pairwise (siamese) ranking loss, two heads whose losses
# differ in gradient scale: an out-of-sample check of level 2's cut test.
FRESH5_TASKS = {
    "pinn": pinn_task,
    "contrastive": contrastive_task,
    "ranking": ranking_task,
    "multitask": multitask_task,
}


# Four more, written on 2026-12-05 (second session) before any run and used for
# no choice, of kinds none of the above has (`--tasks fresh6`): score-function
# (REINFORCE) gradients, a learned variance, weights shared across depth, sparse
# embedding gradients: an out-of-sample check of the shipped defaults, the lr
# ceiling included.
FRESH6_TASKS = {
    "bandit": bandit_task,
    "heteroscedastic": heteroscedastic_task,
    "tied_depth": tied_depth_task,
    "skipgram": skipgram_task,
}

# Four more, written on 2026-12-05 (fourth session) before any run and used for
# no choice, of kinds none of the above has (`--tasks fresh7`): models written
# with Equinox modules and with Flax NNX (their own parameter trees, grouped by
# module), a normalising flow's log-determinants, bfloat16 parameters: an
# out-of-sample check of the per-layer default.
FRESH7_TASKS = {
    "eqx_cnn": eqx_cnn_task,
    "nnx_friedman": nnx_friedman_task,
    "flow": flow_task,
    "bf16": bf16_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (later) before
# any run (`--tasks fresh8`): a vision transformer (patches, two heads), a
# Gaussian mixture's likelihood (means, scales and weights of very different
# curvature), a graph convolutional network (each batch a few nodes of one graph
# run whole), a deep tanh MLP started too small (vanishing gradients).
FRESH8_TASKS = {
    "vit": vit_task,
    "gmm": gmm_task,
    "gnn": gnn_task,
    "deep_tanh": deep_tanh_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (night) before
# any run (`--tasks fresh9`): batch normalisation (each example's output depends
# on its batch), an LSTM (gates), distillation to soft targets (no labels), sparse
# features (rare words' weights seen seldom).
FRESH9_TASKS = {
    "bn_cnn": bn_cnn_task,
    "lstm": lstm_task,
    "distill": distill_task,
    "sparse": sparse_logistic_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (morning)
# before any run (`--tasks fresh10`): a transformer two blocks deep (a residual
# stream, RMSNorm), a loss with an L2 penalty (a regularised minimum), sigmoid
# units, the pinball loss of quantile regression.
FRESH10_TASKS = {
    "transformer": transformer_task,
    "l2": l2_task,
    "sigmoid": sigmoid_task,
    "quantile": quantile_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (midday) before
# any run (`--tasks fresh11`): a diffusion model's denoising loss (noise drawn
# afresh every batch, a high floor), matrix completion with embedding tables and
# biases (sparse rows, an offset far from the init), a soft mixture of experts (a
# gate multiplying its experts' outputs), a 1-D convolutional autoencoder.
FRESH11_TASKS = {
    "denoise": denoise_task,
    "recommender": recommender_task,
    "moe": moe_task,
    "conv_ae": conv_ae_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (afternoon)
# before any run (`--tasks fresh12`): a neural ODE (a gradient through 32
# evaluations of one network), a rare class (one in ten), an MLP-Mixer (mixing by
# weights shared across the other axis), deep sets (a sum over a set's encodings).
FRESH12_TASKS = {
    "neural_ode": neural_ode_task,
    "imbalanced": imbalanced_task,
    "mixer": mixer_task,
    "deep_sets": deep_sets_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (evening)
# before any run (`--tasks fresh13`): low-rank adapters on a frozen network (a
# start at a saddle, B = 0), a Cox partial likelihood (a loss over the batch's
# order in time), a generator trained through Sinkhorn iterations (a loss through
# an iterative solver between two batches), a hypernetwork (weights generated by
# another network).
FRESH13_TASKS = {
    "lora": lora_task,
    "survival": survival_task,
    "sinkhorn": sinkhorn_task,
    "hypernet": hypernet_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (late) before
# any run (`--tasks fresh14`): a deep-kernel Gaussian process (a loss through a
# Cholesky factor and a log-determinant), MAML (a gradient through a gradient), an
# autoregressive density with masked weights (MADE), TransE embeddings under a
# margin loss (no gradient once a triple is ranked with margin).
FRESH14_TASKS = {
    "gp": gp_task,
    "maml": maml_task,
    "made": made_task,
    "transe": transe_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (late) before
# any run (`--tasks fresh15`): semi-gradient TD(0) (a target that moves with the
# parameters), CTC (a loss summed over alignments), a sparse autoencoder (an L1
# penalty on the code), mixup (soft targets drawn afresh every batch).
FRESH15_TASKS = {
    "td": td_task,
    "ctc": ctc_task,
    "sparse_ae": sparse_ae_task,
    "mixup": mixup_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (evening)
# before any run (`--tasks fresh16`): sparse parity (a long plateau, then a
# sudden drop), phase retrieval (a quartic with a saddle at the start), an
# unrolled equilibrium net (gradients through 12 shared iterations), weight
# normalisation (scale-invariant weights whose effective lr shrinks).
FRESH16_TASKS = {
    "parity": parity_task,
    "phase": phase_retrieval_task,
    "equilibrium": equilibrium_task,
    "weight_norm": weight_norm_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (night) before
# any run (`--tasks fresh17`): gated dilated causal convolutions (WaveNet), a
# mixture density network (a multi-valued inverse, a learned mixture), a neural
# additive model (ten small networks stacked in each array), a soft decision
# tree (products of sigmoids along each path).
FRESH17_TASKS = {
    "wavenet": wavenet_task,
    "mdn": mdn_task,
    "additive": additive_task,
    "soft_tree": soft_tree_task,
}

# Four more of kinds none of the above has, written on 2026-12-06 (late night)
# before any run (`--tasks fresh18`): a Kolmogorov-Arnold network (learned edge
# functions on local bases), a policy trained through a simulated rollout, binary
# weights through the straight-through estimator (a gradient that is not the
# loss's), ordinal regression (ordered cut points beside the weights).
FRESH18_TASKS = {
    "kan": kan_task,
    "control": control_task,
    "binary": binary_task,
    "ordinal": ordinal_task,
}

# Four more, written on 2026-12-07 before any run (`--tasks fresh19`), in
# layouts and of kinds users write that none of the above has: JAX's tutorial
# MLP as a list of `(w, b)` tuples at its 0.01 initialisation, a radial-basis
# network with learned centres and widths, a tabular model with embedding
# tables per categorical column, a character model with tied input and output
# embeddings.
FRESH19_TASKS = {
    "stax_mlp": stax_mlp_task,
    "rbf": rbf_task,
    "tabular": tabular_task,
    "tied_lm": tied_lm_task,
}

# Four more of kinds none of the above has, written on 2026-12-07 (later) before
# any run (`--tasks fresh20`): a multiresolution feature-grid field (sparse grid
# gradients), a simulated variational quantum eigensolver (periodic angles, no
# data), a residual SwiGLU MLP with RMSNorm gains, the constants of a Duffing
# oscillator identified through a rollout.
FRESH20_TASKS = {
    "grid_field": grid_field_task,
    "vqe": vqe_task,
    "swiglu": swiglu_task,
    "sysid": sysid_task,
}

# Four more of kinds none of the above has, written on 2026-12-07 (a new
# session) before any run (`--tasks fresh21`): a linear-chain CRF tagger
# (a forward-algorithm partition function, a transition matrix under the root),
# a neural cellular automaton (one small MLP applied for 24 steps on a grid), a
# CLIP-style two-tower model with a learned temperature, a CP tensor completion.
FRESH21_TASKS = {
    "crf": crf_task,
    "nca": cellular_automaton_task,
    "two_tower": two_tower_task,
    "cp": cp_completion_task,
}


def bnn_task(hidden: int = 32, n: int = 600, prior: float = 1.0):
    """A Bayesian neural network by variational inference (Blundell et al. 2015,
    "Bayes by backprop"): a 1-32-32-1 tanh MLP whose every weight is a Gaussian
    (a mean and a softplus-parametrised standard deviation, started at 0.01),
    fitted to y = sin(3x) + 0.3 x + noise (sd 0.1) on x in [-2, 2] by the
    negative ELBO per example: a Gaussian likelihood at the known noise, one
    weight draw per batch (the reparametrisation's noise from the batch), plus
    the KL divergence to a N(0, 1) prior over the training set's size. Twice as
    many arrays as the network has, means and scales. Test metric: the MSE of
    the mean network's prediction."""
    rng = np.random.default_rng(907)
    x = rng.uniform(-2, 2, (n + 400, 1)).astype(np.float32)
    y = (np.sin(3 * x) + 0.3 * x + 0.1 * rng.standard_normal(x.shape)).astype(
        np.float32
    )
    sizes = (1, hidden, hidden, 1)
    means = init_mlp(jr.key(911), sizes)
    rho0 = float(np.log(np.expm1(0.01)))  # softplus(rho0) = 0.01
    params = [
        {"mu": layer, "rho": jax.tree.map(lambda a: jnp.full_like(a, rho0), layer)}
        for layer in means
    ]

    def loss(p, b):
        key = _key_of(b[0])
        sampled, kl = [], 0.0
        for i, layer in enumerate(p):
            sd = jax.tree.map(jax.nn.softplus, layer["rho"])
            eps = {k: jr.normal(jr.fold_in(key, 2 * i + j), v.shape)
                   for j, (k, v) in enumerate(sorted(layer["mu"].items()))}  # fmt: skip
            sampled.append(
                jax.tree.map(lambda m, s, e: m + s * e, layer["mu"], sd, eps)
            )
            kl += sum(
                jnp.sum(jnp.log(prior / s) + (s**2 + m**2) / (2 * prior**2) - 0.5)
                for m, s in zip(jax.tree.leaves(layer["mu"]), jax.tree.leaves(sd))
            )
        pred = mlp(sampled, b[0])
        nll = jnp.mean((pred - b[1]) ** 2) / (2 * 0.1**2)
        return nll + kl / n

    def mse(p, b):
        return jnp.mean((mlp([layer["mu"] for layer in p], b[0]) - b[1]) ** 2)

    return Task(
        "Bayes-by-backprop MLP", (x[:n], y[:n]), (x[n:], y[n:]), params, loss, mse,
        "test MSE of the mean network", 32,
    )  # fmt: skip


def svm_task(penalty: float = 1e-3):
    """A linear support vector machine on digits' 3s against 8s (the 64 pixel
    features, standardised): the mean hinge loss max(0, 1 - y f(x)) plus
    penalty x ||w||^2, nonsmooth, and exactly 0 on every example outside the
    margin, so whole batches can give gradients of the penalty alone. Test
    metric: accuracy."""
    d = ro.load_digits()

    def pick(data):
        x, y = data
        keep = (y == 3) | (y == 8)
        return x[keep], np.where(y[keep] == 3, 1.0, -1.0).astype(np.float32)

    (x, y), (xt, yt) = pick(d.train), pick(d.test)
    mean, sd = x.mean(0), x.std(0) + 1e-3
    x, xt = (x - mean) / sd, (xt - mean) / sd
    params = {"w": jnp.zeros(64), "b": jnp.zeros(())}

    def loss(p, b):
        margin = b[1] * (b[0] @ p["w"] + p["b"])
        return jnp.mean(jnp.maximum(0.0, 1.0 - margin)) + penalty * p["w"] @ p["w"]

    def accuracy(p, b):
        return jnp.mean(jnp.sign(b[0] @ p["w"] + p["b"]) == b[1])

    return Task(
        "linear SVM, hinge loss", (x, y), (xt, yt), params, loss, accuracy,
        "test accuracy", 32,
    )  # fmt: skip


def triplet_task(margin: float = 0.5, dim: int = 16):
    """Metric learning with the batch-hard triplet loss (Hermans et al. 2017) on
    digits: a 64-64-16 ReLU network maps images to unit vectors; for each image
    of a batch of 64, its farthest same-class and nearest other-class images in
    the batch, hinge max(0, margin + d_pos - d_neg) at margin 0.5. Piecewise,
    with its hardest pairs changing from batch to batch. Test metric: leave-one-
    out nearest-neighbour accuracy among the test images' embeddings."""
    d = ro.load_digits()
    params = init_mlp(jr.key(919), (64, 64, dim))

    def embed(p, x):
        z = mlp(p, x, activation=jax.nn.relu)
        return z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-6)

    def distances(z):
        return jnp.sqrt(jnp.maximum(2 - 2 * z @ z.T, 1e-12))

    def loss(p, b):
        dist = distances(embed(p, b[0]))
        same = b[1][:, None] == b[1][None, :]
        pos = jnp.max(jnp.where(same, dist, 0.0), 1)
        neg = jnp.min(jnp.where(same, jnp.inf, dist), 1)
        return jnp.mean(jnp.maximum(0.0, margin + pos - neg))

    def nn_accuracy(p, b):
        dist = distances(embed(p, b[0])) + jnp.eye(len(b[1])) * 1e6
        return jnp.mean(b[1][jnp.argmin(dist, 1)] == b[1])

    return Task(
        "batch-hard triplet embedding", d.train, d.test, params, loss, nn_accuracy,
        "test 1-NN accuracy", 64,
    )  # fmt: skip


def seq2seq_task(length: int = 8, tokens: int = 10, hidden: int = 48):
    """Sequence reversal by an encoder-decoder of two GRUs (Sutskever et al. 2014,
    without attention): sequences of 8 tokens out of 10, embedded in 16
    dimensions; the encoder's last state starts the decoder, which reads the
    target reversed sequence shifted by one (teacher forcing, a start token) and
    predicts each token. Everything must pass through one 48-dimensional state.
    Test metric: per-token accuracy under teacher forcing."""
    rng = np.random.default_rng(929)
    n = 3000
    x = rng.integers(0, tokens, (n, length)).astype(np.int32)
    y = x[:, ::-1].copy()
    keys = jr.split(jr.key(931), 6)

    def gru(k):
        k1, k2 = jr.split(k)
        return {
            "wx": jr.normal(k1, (16, 3 * hidden)) / np.sqrt(16),
            "wh": jr.normal(k2, (hidden, 3 * hidden)) / np.sqrt(hidden),
            "b": jnp.zeros(3 * hidden),
        }

    params = {
        "embed": jr.normal(keys[0], (tokens + 1, 16)),  # the last: start token
        "encoder": gru(keys[1]),
        "decoder": gru(keys[2]),
        "out": init_mlp(keys[3], (hidden, tokens))[0],
    }

    def run(g, h, emb):
        def cell(h, e):
            h = _gru_step(g, h, e)
            return h, h

        return jax.lax.scan(cell, h, jnp.swapaxes(emb, 0, 1))

    def logits(p, b):
        src, tgt = b
        h, _ = run(p["encoder"], jnp.zeros((len(src), hidden)), p["embed"][src])
        start = jnp.full((len(tgt), 1), tokens)
        inputs = jnp.concatenate([start, tgt[:, :-1]], 1)
        _, hs = run(p["decoder"], h, p["embed"][inputs])
        return jnp.swapaxes(hs, 0, 1) @ p["out"]["w"] + p["out"]["b"]

    def loss(p, b):
        return _ce(logits(p, b).reshape(-1, tokens), b[1].reshape(-1))

    def accuracy(p, b):
        return jnp.mean(jnp.argmax(logits(p, b), -1) == b[1])

    return Task(
        "GRU encoder-decoder, reversal", (x[:2500], y[:2500]), (x[2500:], y[2500:]),
        params, loss, accuracy, "test token accuracy", 64,
    )  # fmt: skip


# Four more of kinds none of the above has, written on 2026-12-07 (evening, a
# new session) before any run (`--tasks fresh22`): a Bayesian MLP by variational
# inference (means and scales of every weight, a noisy objective), a linear SVM
# (hinge loss: exactly 0 outside the margin), batch-hard triplet metric learning,
# a GRU encoder-decoder reversing sequences.
FRESH22_TASKS = {
    "bnn": bnn_task,
    "svm": svm_task,
    "triplet": triplet_task,
    "seq2seq": seq2seq_task,
}


def ssm_task(length: int = 48, channels: int = 16, hidden: int = 32):
    """A diagonal linear state-space layer (LRU-style; Orvieto et al. 2023) on a
    memory task: h_t = a * h_{t-1} + x_t B per channel, the decays a = exp(-exp(nu))
    learned (started with a from 0.5 to 0.99), the last state into a GELU MLP.
    Inputs: 48 steps of two standard normal features; the label is the sign of the
    sum of the first feature over the first 8 steps, so it must be held for 40
    steps against the noise after. The decays' log-log parametrisation gives them
    gradients on a scale far from the input and output weights'. Test metric:
    accuracy."""
    rng = np.random.default_rng(929)
    x = rng.standard_normal((4000, length, 2)).astype(np.float32)
    y = (x[:, :8, 0].sum(1) > 0).astype(np.int32)
    ks = jr.split(jr.key(937), 3)
    a0 = np.linspace(0.5, 0.99, channels)
    params = {
        "nu": jnp.asarray(np.log(-np.log(a0)), jnp.float32),
        "B": jr.normal(ks[0], (2, channels)) / np.sqrt(2),
        "head": init_mlp(ks[1], (channels, hidden, 2)),
    }

    def logits(p, xs):
        a = jnp.exp(-jnp.exp(p["nu"]))
        u = xs @ p["B"]  # (batch, time, channels)

        def step(h, u_t):
            return a * h + u_t, None

        h, _ = jax.lax.scan(step, jnp.zeros(u.shape[::2]), jnp.swapaxes(u, 0, 1))
        return mlp(p["head"], h, jax.nn.gelu)

    loss = lambda p, b: _ce(logits(p, b[0]), b[1])  # noqa: E731
    return Task(
        "diagonal linear SSM, memory", (x[:3000], y[:3000]), (x[3000:], y[3000:]),
        params, loss, _accuracy(logits), "test accuracy", 32,
    )  # fmt: skip


def poincare_task(
    branching: int = 3, depth: int = 5, dim: int = 5, negatives: int = 10
):
    """Poincare embeddings of a tree (Nickel and Kiela 2017): the 364 nodes of a
    complete 3-ary tree of depth 5 as points of the 5-D unit ball (free vectors z
    mapped in by tanh(|z|) z / |z|, started near the origin); for each edge of a
    batch, a softmax over the hyperbolic distances from the child to its parent
    and to 10 random nodes. The distance's arcosh grows without bound towards the
    ball's edge, where the deep nodes must go. Test metric: the mean rank of each
    child's parent among all other nodes by distance (1 is best)."""
    parents = [-1]
    frontier = [0]
    for _ in range(depth):
        nxt = []
        for node in frontier:
            for _ in range(branching):
                parents.append(node)
                nxt.append(len(parents) - 1)
        frontier = nxt
    nodes = len(parents)
    child = np.arange(1, nodes, dtype=np.int32)
    parent = np.asarray(parents[1:], np.int32)
    params = {"z": 1e-3 * jr.normal(jr.key(941), (nodes, dim))}

    def ball(z):
        r = jnp.sqrt(jnp.sum(z * z, -1, keepdims=True) + 1e-12)
        return jnp.tanh(r) * z / r

    def distance(u, v):
        sq = jnp.sum((u - v) ** 2, -1)
        den = (1 - jnp.sum(u * u, -1)) * (1 - jnp.sum(v * v, -1))
        arg = 1 + 2 * sq / jnp.maximum(den, 1e-7)
        return jnp.arccosh(jnp.maximum(arg, 1 + 1e-7))

    def loss(p, b):
        u = ball(p["z"])
        key = _key_of(b[0].astype(jnp.float32))
        neg = jr.randint(key, (len(b[0]), negatives), 0, nodes)
        cand = jnp.concatenate([b[1][:, None], neg], 1)
        d = distance(u[b[0]][:, None], u[cand])
        return jnp.mean(jax.nn.logsumexp(-d, -1) + d[:, 0])

    def mean_rank(p, b):
        u = ball(p["z"])
        d = distance(u[b[0]][:, None], u[None])  # (edges, nodes)
        d = d.at[jnp.arange(len(b[0])), b[0]].set(jnp.inf)  # not itself
        true = d[jnp.arange(len(b[0])), b[1]]
        return jnp.mean(jnp.sum(d < true[:, None], -1) + 1.0)

    return Task(
        "Poincare tree embedding", (child, parent), (child, parent), params, loss,
        mean_rank, "mean rank of the parent", 32,
    )  # fmt: skip


def deblur_task(n: int = 32, weight: float = 2e-3, noise: float = 0.02):
    """Image deblurring in pixel space: the 32 x 32 pixels themselves are the
    parameters (started at the blurred image), fitted to a Gaussian blur (sd 1.5
    pixels) of a piecewise-constant image plus noise (sd 0.02) under a smoothed
    total-variation prior, weight * sum sqrt(|grad x|^2 + 1e-4). One deterministic
    objective (the batches are ignored), ill-conditioned by the blur and nearly
    nonsmooth at the prior's kinks. Test metric: MSE to the sharp image."""
    u = (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(u, u, indexing="ij")
    sharp = 0.2 + 0.6 * ((np.abs(xx - 0.3) < 0.15) & (np.abs(yy - 0.35) < 0.2))
    sharp = sharp + 0.5 * (np.hypot(xx - 0.68, yy - 0.62) < 0.18)
    sharp = sharp.astype(np.float32)
    t = np.arange(-4, 5)
    kernel = np.exp(-(t**2) / (2 * 1.5**2))
    kernel = (kernel / kernel.sum()).astype(np.float32)

    def blur(img):
        img = jnp.pad(img, 4, mode="edge")
        rows = jax.vmap(lambda r: jnp.convolve(r, kernel, mode="valid"))(img)
        return jax.vmap(lambda c: jnp.convolve(c, kernel, mode="valid"), 1, 1)(rows)

    rng = np.random.default_rng(947)
    observed = np.asarray(blur(jnp.asarray(sharp))) + noise * rng.standard_normal(
        (n, n)
    ).astype(np.float32)
    observed = jnp.asarray(observed, jnp.float32)

    def loss(p, b):
        del b
        x = p["image"]
        dx, dy = jnp.diff(x, axis=0)[:, :-1], jnp.diff(x, axis=1)[:-1, :]
        tv = jnp.sum(jnp.sqrt(dx**2 + dy**2 + 1e-4))
        return 0.5 * jnp.sum((blur(x) - observed) ** 2) + weight * tv

    def mse(p, b):
        del b
        return jnp.mean((p["image"] - sharp) ** 2)

    dummy = _no_data(8)
    return Task(
        "TV deblurring in pixel space", dummy, dummy, {"image": observed}, loss, mse,
        "test MSE to the sharp image", 8,
    )  # fmt: skip


@jax.custom_jvp
def _spike(v):
    """A spike where the membrane potential v (less the threshold) is positive."""
    return (v > 0).astype(v.dtype)


@_spike.defjvp
def _spike_jvp(primals, tangents):  # the fast sigmoid's slope (SuperSpike)
    (v,), (dv,) = primals, tangents
    return _spike(v), dv / (1 + 10 * jnp.abs(v)) ** 2


def snn_task(hidden: int = 64, steps: int = 8, decay: float = 0.8):
    """A spiking network on digits (surrogate gradients; Zenke and Ganguli 2018):
    the image as a constant input current for 8 steps into 64 leaky
    integrate-and-fire neurons (decay 0.8, threshold 1, reset by subtraction),
    their spikes into 10 leaky non-spiking readouts whose summed potentials are
    the logits. The spike's derivative is replaced by the fast sigmoid's, so the
    gradient is not the loss's, and a layer whose neurons stop spiking passes
    little gradient. Test metric: accuracy."""
    d = ro.load_digits()
    ks = jr.split(jr.key(953), 2)
    params = {
        "w1": jr.normal(ks[0], (64, hidden)) * (2 / np.sqrt(64)),
        "b1": jnp.zeros(hidden),
        "w2": jr.normal(ks[1], (hidden, 10)) / np.sqrt(hidden),
    }

    def logits(p, x):
        current = x @ p["w1"] + p["b1"]

        def step(carry, _):
            v, r, total = carry
            v = decay * v + current
            s = _spike(v - 1.0)
            v = v - s  # reset by subtraction
            r = decay * r + s @ p["w2"]
            return (v, r, total + r), None

        zeros = jnp.zeros(current.shape), jnp.zeros((len(x), 10))
        (_, _, total), _ = jax.lax.scan(step, (*zeros, zeros[1]), None, steps)
        return total / steps

    loss = lambda p, b: _ce(logits(p, b[0]), b[1])  # noqa: E731
    return Task(
        "spiking network, surrogate gradient", d.train, d.test, params, loss,
        _accuracy(logits), "test accuracy", 64,
    )  # fmt: skip


# Four more of kinds none of the above has, written on 2026-12-08 before any run
# (`--tasks fresh23`): a diagonal linear state-space layer with learned decays
# on a memory task, Poincare embeddings of a tree (hyperbolic distances), TV
# deblurring with the pixels as parameters, a spiking network trained through a
# surrogate gradient.
FRESH23_TASKS = {
    "ssm": ssm_task,
    "poincare": poincare_task,
    "deblur": deblur_task,
    "snn": snn_task,
}


def zipf_lm_task(vocab: int = 2000, width: int = 32, n: int = 20_000):
    """A word-level bigram model on a Zipfian vocabulary of 2000 tokens: the
    previous token's embedding (a 2000 x 32 table) through a tanh layer into a
    softmax over all 2000. Tokens follow a hidden bigram structure (each token's
    successor drawn from 20 candidates), their frequencies Zipf's law (exponent
    1.1), so most rows of the table and of the output layer see no gradient in a
    given batch and rare ones almost never. Test metric: test loss (nats)."""
    rng = np.random.default_rng(967)
    freq = 1.0 / np.arange(1, vocab + 1) ** 1.1
    freq /= freq.sum()
    successors = rng.choice(vocab, (vocab, 20), p=freq)
    tokens = np.empty(n + 1, np.int32)
    tokens[0] = 0
    for t in range(n):  # a successor of the last token, or a fresh Zipf draw
        if rng.random() < 0.8:
            tokens[t + 1] = successors[tokens[t], rng.integers(20)]
        else:
            tokens[t + 1] = rng.choice(vocab, p=freq)
    x, y = tokens[:-1], tokens[1:]
    k1, k2 = jr.split(jr.key(971))
    params = {
        "embed": 0.1 * jr.normal(k1, (vocab, width)),
        "net": init_mlp(k2, (width, 64, vocab)),
    }

    def logits(p, xs):
        return mlp(p["net"], p["embed"][xs])

    loss = lambda p, b: _ce(logits(p, b[0]), b[1])  # noqa: E731
    cut = int(0.9 * n)
    return Task(
        "Zipfian bigram model, 2000 tokens", (x[:cut], y[:cut]), (x[cut:], y[cut:]),
        params, loss, loss, "test loss (nats)", 64,
    )  # fmt: skip


def gumbel_vae_task(groups: int = 8, classes: int = 8, temperature: float = 0.5):
    """A discrete VAE on digits with Gumbel-softmax latents (Jang et al. 2017): a
    64-128 encoder to 8 categorical variables of 8 classes, relaxed samples at
    temperature 0.5 (the Gumbel noise drawn per batch) into a 64-128-64
    decoder, the Bernoulli likelihood and the KL to a uniform prior. The relaxed
    sample's gradient is biased and noisy. Test metric: the test loss."""
    d = ro.load_digits()
    k1, k2 = jr.split(jr.key(977))
    params = {
        "enc": init_mlp(k1, (64, 128, groups * classes)),
        "dec": init_mlp(k2, (groups * classes, 128, 64)),
    }

    def loss(p, b):
        x = b[0]
        logits = mlp(p["enc"], x, jax.nn.relu).reshape(-1, groups, classes)
        u = jr.uniform(_key_of(x), logits.shape, minval=1e-6, maxval=1 - 1e-6)
        z = jax.nn.softmax((logits - jnp.log(-jnp.log(u))) / temperature, -1)
        out = mlp(p["dec"], z.reshape(len(x), -1), jax.nn.relu)
        nll = optax.sigmoid_binary_cross_entropy(out, x).sum(-1)
        q = jax.nn.log_softmax(logits, -1)
        kl = jnp.sum(jnp.exp(q) * (q + jnp.log(classes)), (-2, -1))
        return jnp.mean(nll + kl)

    return Task(
        "Gumbel-softmax VAE", d.train, d.test, params, loss, loss,
        "test loss (relaxed negative ELBO)", 64,
    )  # fmt: skip


def hnn_task(hidden: int = 64, n: int = 3000):
    """A Hamiltonian neural network (Greydanus et al. 2019) on a pendulum: a 2-64-64-1
    tanh network H(q, p) whose symplectic gradient (dH/dp, -dH/dq), taken with
    `jax.grad` in the inputs, is fitted to the true time derivatives (q' = p,
    p' = -3 sin q) plus noise (sd 0.05) at states drawn over energies from
    rest to past the separatrix. The loss is of the network's input gradient.
    Test metric: the test loss."""
    rng = np.random.default_rng(983)
    q = rng.uniform(-np.pi, np.pi, n)
    p_ = rng.uniform(-3.5, 3.5, n)
    x = np.stack([q, p_], -1).astype(np.float32)
    dx = np.stack([p_, -3 * np.sin(q)], -1)
    dx = (dx + 0.05 * rng.standard_normal(dx.shape)).astype(np.float32)
    params = init_mlp(jr.key(991), (2, hidden, hidden, 1))

    def field(p, xs):
        grad_h = jax.vmap(jax.grad(lambda z: mlp(p, z)[0]))(xs)
        return jnp.stack([grad_h[:, 1], -grad_h[:, 0]], -1)

    loss = lambda p, b: jnp.mean((field(p, b[0]) - b[1]) ** 2)  # noqa: E731
    cut = int(0.8 * n)
    return Task(
        "Hamiltonian network, pendulum", (x[:cut], dx[:cut]), (x[cut:], dx[cut:]),
        params, loss, loss, "test MSE of the vector field", 32,
    )  # fmt: skip


def thomson_task(points: int = 64):
    """The Thomson problem: 64 unit charges on the sphere (free 3-vectors, each
    normalised onto it) placed to minimise their Coulomb energy, sum 1 / |x_i -
    x_j|, started at random. Deterministic (the batches are ignored), with many
    nearly equal minima and a loss that grows without bound where two points
    meet. The loss is the energy less 1765.8, just under the least known for 64
    charges (1765.8026, Wales and Ulker 2006), so that ratios of losses read the
    gap to it. Test metric: the same."""
    z0 = jr.normal(jr.key(997), (points, 3))
    iu = np.triu_indices(points, 1)

    def loss(p, b):
        del b
        x = p["z"] / jnp.linalg.norm(p["z"], axis=-1, keepdims=True)
        d2 = jnp.sum((x[:, None] - x[None]) ** 2, -1)[iu]
        return jnp.sum(1 / jnp.sqrt(d2 + 1e-12)) - 1765.8

    dummy = _no_data(8)
    return Task(
        "Thomson problem, 64 charges", dummy, dummy, {"z": z0}, loss, loss,
        "energy above 1765.8", 8,
    )  # fmt: skip


# Four more of kinds none of the above has, written on 2026-12-08 (later) before
# any run (`--tasks fresh24`): a bigram model over a Zipfian 2000-token
# vocabulary (sparse rows, a large softmax), a Gumbel-softmax discrete VAE, a
# Hamiltonian network (a loss on the network's input gradient), the Thomson
# problem (deterministic, points on a sphere).
FRESH24_TASKS = {
    "zipf": zipf_lm_task,
    "gumbel": gumbel_vae_task,
    "hnn": hnn_task,
    "thomson": thomson_task,
}


def texture_task(n: int = 32, filters: int = 16):
    """Texture synthesis in pixel space (Gatys et al. 2015, in miniature): a 32 x
    32 image, started as noise, fitted so that the Gram matrices of two layers of
    fixed random 3 x 3 convolutions (16 channels each, ReLU) match those of a
    target texture (oriented stripes with a blob pattern). A loss of fourth order
    in the pixels, with every image whose features have the same statistics a
    minimum. Deterministic (the batches are ignored). Test metric: the same."""
    u = np.arange(n)
    xx, yy = np.meshgrid(u, u, indexing="ij")
    target = 0.5 + 0.3 * np.sin(0.9 * xx + 0.4 * yy) + 0.2 * np.cos(0.5 * xx * yy / n)
    target = jnp.asarray(target, jnp.float32)[None, None]
    k1, k2, k3 = jr.split(jr.key(1009), 3)
    w1 = jr.normal(k1, (filters, 1, 3, 3)) / 3.0
    w2 = jr.normal(k2, (filters, filters, 3, 3)) / (3.0 * np.sqrt(filters))

    def grams(img):
        out, h = [], img
        for w in (w1, w2):
            h = jax.nn.relu(jax.lax.conv(h, w, (1, 1), "SAME"))
            f = h.reshape(h.shape[1], -1)
            out.append(f @ f.T / f.shape[1])
        return out

    goal = grams(target)

    def loss(p, b):
        del b
        return sum(jnp.sum((g - t) ** 2) for g, t in zip(grams(p["image"]), goal))

    image = 0.5 + 0.1 * jr.normal(k3, (1, 1, n, n))
    dummy = _no_data(8)
    return Task(
        "Gram-matrix texture synthesis", dummy, dummy, {"image": image}, loss, loss,
        "Gram loss", 8,
    )  # fmt: skip


def nce_task(hidden: int = 64, n: int = 6000):
    """An unnormalised density by noise-contrastive estimation (Gutmann and
    Hyvarinen 2010): a 2-64-64-1 tanh energy E(x) and a learned log Z, trained
    by the logistic loss telling data (a noisy ring of radius 2 with three
    bright arcs) from as many samples of a N(0, 2^2 I) noise (drawn per batch),
    on log p_model - log p_noise. The log-normaliser is one scalar parameter
    beside the network's arrays. Test metric: the same loss on held-out data."""
    rng = np.random.default_rng(1013)
    angle = np.concatenate(
        [rng.uniform(0, 2 * np.pi, n // 2), rng.choice([0.5, 2.6, 4.7], n // 2)
         + 0.3 * rng.standard_normal(n // 2)]
    )  # fmt: skip
    radius = 2 + 0.15 * rng.standard_normal(n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1)
    x = x[rng.permutation(n)].astype(np.float32)
    y = np.zeros(n, np.float32)
    params = {
        "energy": init_mlp(jr.key(1019), (2, hidden, hidden, 1)),
        "log_z": jnp.zeros(()),
    }

    def log_ratio(p, z):
        log_model = -mlp(p["energy"], z)[:, 0] - p["log_z"]
        log_noise = -jnp.sum(z**2, -1) / 8 - jnp.log(8 * jnp.pi)
        return log_model - log_noise

    def loss(p, b):
        noise = 2 * jr.normal(_key_of(b[0]), b[0].shape)
        return -jnp.mean(jax.nn.log_sigmoid(log_ratio(p, b[0]))) - jnp.mean(
            jax.nn.log_sigmoid(-log_ratio(p, noise))
        )

    cut = int(0.8 * n)
    return Task(
        "noise-contrastive energy model", (x[:cut], y[:cut]), (x[cut:], y[cut:]),
        params, loss, loss, "test NCE loss", 64,
    )  # fmt: skip


def procrustes_task(d: int = 8, n: int = 2000):
    """A rotation fitted through the matrix exponential: point clouds in 8-D
    and their images under an unknown rotation plus noise (sd 0.05); the model
    is expm(A - A^T) applied to the points, A a free 8 x 8 matrix (started at
    0, the identity), so the loss passes through `jax.scipy.linalg.expm` and
    every step stays on the rotations. Test metric: the held-out MSE."""
    rng = np.random.default_rng(1021)
    skew = rng.standard_normal((d, d))
    true = np.asarray(jax.scipy.linalg.expm(jnp.asarray(0.7 * (skew - skew.T))))
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x @ true.T + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    params = {"a": jnp.zeros((d, d))}

    def loss(p, b):
        rotation = jax.scipy.linalg.expm(p["a"] - p["a"].T)
        return jnp.mean(jnp.sum((b[0] @ rotation.T - b[1]) ** 2, -1))

    cut = int(0.8 * n)
    return Task(
        "rotation through expm", (x[:cut], y[:cut]), (x[cut:], y[cut:]), params,
        loss, loss, "test MSE", 32,
    )  # fmt: skip


def text_cnn_task(vocab: int = 300, length: int = 40, dim: int = 24, n: int = 6000):
    """A convolutional text classifier (Kim 2014): token embeddings (300 x 24),
    32 filters of width 3 with ReLU, max over time, a linear layer to 4
    classes. Sequences of random tokens; each class plants one of its own three
    trigrams at a random place, and a trigram of another class is planted as a
    distractor in half the sequences. The max over time routes each example's
    gradient through one position per filter. Test metric: accuracy."""
    rng = np.random.default_rng(1031)
    motifs = rng.integers(0, vocab, (4, 3, 3))
    x = rng.integers(0, vocab, (n, length))
    y = rng.integers(0, 4, n).astype(np.int32)
    for i in range(n):
        at = rng.integers(0, length - 3)
        x[i, at : at + 3] = motifs[y[i], rng.integers(3)]
        if rng.random() < 0.5:
            other = (y[i] + rng.integers(1, 4)) % 4
            at2 = rng.integers(0, length - 3)
            if abs(at2 - at) >= 3:
                x[i, at2 : at2 + 3] = motifs[other, rng.integers(3)]
    x = x.astype(np.int32)
    k1, k2, k3 = jr.split(jr.key(1033), 3)
    params = {
        "embed": 0.3 * jr.normal(k1, (vocab, dim)),
        "conv": {"w": jr.normal(k2, (3 * dim, 32)) / np.sqrt(3 * dim),
                 "b": jnp.zeros(32)},
        "out": init_mlp(k3, (32, 4))[0],
    }  # fmt: skip

    def logits(p, xs):
        e = p["embed"][xs]  # (batch, length, dim)
        windows = jnp.concatenate([e[:, :-2], e[:, 1:-1], e[:, 2:]], -1)
        h = jax.nn.relu(windows @ p["conv"]["w"] + p["conv"]["b"]).max(1)
        return h @ p["out"]["w"] + p["out"]["b"]

    loss = lambda p, b: _ce(logits(p, b[0]), b[1])  # noqa: E731
    cut = int(0.8 * n)
    return Task(
        "text CNN, max over time", (x[:cut], y[:cut]), (x[cut:], y[cut:]), params,
        loss, _accuracy(logits), "test accuracy", 64,
    )  # fmt: skip


# Four more of kinds none of the above has, written on 2026-12-08 (later still)
# before any run (`--tasks fresh25`): Gram-matrix texture synthesis in pixel
# space, a noise-contrastive energy model with a learned log-normaliser, a
# rotation fitted through the matrix exponential, a convolutional text
# classifier with max-over-time pooling.
FRESH25_TASKS = {
    "texture": texture_task,
    "nce": nce_task,
    "procrustes": procrustes_task,
    "text_cnn": text_cnn_task,
}

CEILING = ro.Stack[3](ro.Adam()).levels[0].lr.bounds  # (None, 1.0) for starts <= 1


def _lr_only(lr, bounds=CEILING, per="layer"):  # level 1 of the default: lr alone
    return ro.Adam(
        ro.hyper(lr, per=per, bounds=bounds), b1=ro.fixed(0.9), b2=ro.fixed(0.999)
    )


CLIP = ro.Stack[3](ro.Adam()).levels[1].clip  # the default's, over Adam: (-2, None)
# level 2's, over Adam: (0.9, 100, 1.0, 300)
GATE = ro.Stack[3](ro.Adam()).levels[1].gate


def _upper(lr, b2=0.99, b1=0.9, clip=CLIP, gate=None):
    return ro.Adam(lr, b1=ro.fixed(b1), b2=ro.fixed(b2), clip=clip, gate=gate)


def _level2(lr=0.1, b2=0.99, b1=0.5, clip=CLIP, gate=GATE):  # the default's, over Adam
    return _upper(lr, b2, b1, clip, gate)


def _level2_gated(gate, warmup, warmup_shape):
    """`Stack[3](Adam(lr))`'s default with level 2's gate replaced, by `lr`."""
    return lambda lr: ro.Stack(
        _lr_only(lr),
        _level2(gate=gate),
        _upper(0.01),
        warmup=warmup,
        warmup_shape=warmup_shape,
    ).as_optax()


def _sgd_tower(lr, level1=None, level2=None):
    """`Stack[3](SGD(lr, momentum=0.9))` with its level 1 or 2 replaced."""
    tower = ro.Stack[3](ro.SGD(lr, momentum=0.9))
    one, two, three = tower.levels
    return ro.Stack(
        level1 or one,
        level2 or two,
        three,
        warmup=tower.warmup,
        warmup_shape=tower.warmup_shape,
    ).as_optax()


def _sgd_per_layer(lr):  # level 1's lr one per layer
    one = ro.SGD(ro.hyper(lr, per="layer"), momentum=ro.fixed(0.9))
    return _sgd_tower(lr, level1=one)


def _sgd_level2(lr, b1):  # level 2's b1 `b1`
    return _sgd_tower(lr, level2=_upper(0.1, b1=b1, clip=None))


def towers() -> dict:
    """Swept over the initial lr: the default towers, plain Adam and plain
    SGD with momentum (what the SGD tower is to be compared with)."""
    return {
        "Adam (grid)": optax.adam,
        "SGD-m (grid)": lambda lr: optax.sgd(lr, momentum=0.9),
        "Stack[2](Adam(lr))": lambda lr: ro.Stack[2](ro.Adam(lr)).as_optax(),
        "Stack[3](Adam(lr))": lambda lr: ro.Stack[3](ro.Adam(lr)).as_optax(),
        "Stack[3](Adam(lr), tie=True)": lambda lr: ro.Stack[3](
            ro.Adam(lr), tie=True
        ).as_optax(),
        "Stack[3](SGD(lr, momentum=0.9))": lambda lr: ro.Stack[3](
            ro.SGD(lr, momentum=0.9)
        ).as_optax(),
    }


def defaults() -> dict:
    """Run once (the grid value is ignored): things a user runs untuned."""
    c = optax.contrib
    return {
        "Stack[3](Adam())": lambda _: ro.Stack[3](ro.Adam()).as_optax(),
        "prodigy": lambda _: c.prodigy(),
        "dadapt_adamw": lambda _: c.dadapt_adamw(),
        "dog": lambda _: c.dog(),
        "mechanize(adam(1e-3))": lambda _: c.mechanize(optax.adam(1e-3)),
        "schedule_free_adamw(1e-3)": lambda _: c.schedule_free_adamw(1e-3),
        "cocob": lambda _: c.cocob(),
    }


def _prodigy_floor(lr, c: float = 0.1, ratchet: bool = False, spike=None):
    """A probe, not in the library: the default tower with level 1's lrs kept at
    least min(c x d_t, 1), d_t prodigy's distance estimate (`optax.contrib.prodigy`
    updated beside the tower on the same gradients at the tower's parameters, its
    own step discarded), written with `optax.tree_utils.tree_set` after every
    update ("A floor from prodigy's distance estimate" in benchmarks/README.md).
    With `ratchet`, each lr's floor is also at most the lr the step began with:
    the floor stops a fall but never raises an lr (prodigy's estimate only
    grows, and a late growth would lift lrs the tower had left below it). With
    `spike` (a factor), the floor is gone for good once a running mean of the
    gradient's norm (decay 0.9) exceeds `spike` times its lowest value since
    step 100: a loss spike is not the noise a lean comes from."""
    tower, prodigy = ro.Stack[3](ro.Adam(lr)).as_optax(), optax.contrib.prodigy()

    def init(params):
        watch = (jnp.zeros(()), jnp.asarray(jnp.inf), jnp.ones(()))  # mean, low, on
        return tower.init(params), prodigy.init(params), watch

    def update(grads, state, params):
        updates, tower_state = tower.update(grads, state[0], params)
        _, prodigy_state = prodigy.update(grads, state[1], params)
        mean, low, on = state[2]
        if spike is not None:  # prodigy's count: the steps before this one
            mean = 0.9 * mean + 0.1 * optax.global_norm(grads)
            low = jnp.where(state[1].count >= 100, jnp.minimum(low, mean), low)
            on = jnp.where(mean > spike * low, 0.0, on)
        floor = on * jnp.minimum(c * prodigy_state.estim_lr, 1.0)
        lrs = optax.tree_utils.tree_get(tower_state, "lr", filtering=ro.at_level(1))
        if ratchet:  # never above the lr the step began with: stops falls only
            before = optax.tree_utils.tree_get(state[0], "lr", filtering=ro.at_level(1))
            floors = jax.tree.map(lambda b: jnp.minimum(floor, b), before)
        else:
            floors = jax.tree.map(lambda _: floor, lrs)
        lrs = jax.tree.map(lambda x, f: jnp.maximum(x, f).astype(x.dtype), lrs, floors)
        tower_state = optax.tree_utils.tree_set(tower_state, ro.at_level(1), lr=lrs)
        return updates, (tower_state, prodigy_state, (mean, low, on))

    return optax.GradientTransformation(init, update)


def ablation() -> dict:
    """What each choice of the default bought (all Stack[3] unless named); each
    row changes one choice of the default, or names the older towers."""
    ident = lambda v: ro.hyper(v, transform="identity")  # noqa: E731
    w, s = ro.Stack[3](ro.Adam()).warmup, ro.Stack[3](ro.Adam()).warmup_shape
    level2_gated = functools.partial(_level2_gated, warmup=w, warmup_shape=s)
    return {
        "copies of Adam(lr) (the old Stack[3])": lambda lr: ro.Stack(
            *[ro.Adam(lr)] * 3
        ).as_optax(),
        "reference style: raw lr, Adam(1e-3), Adam(1e-4)": lambda lr: ro.Stack(
            ro.Adam(ident(lr)), ro.Adam(ident(1e-3)), ro.Adam(ident(1e-4))
        ).as_optax(),
        "log lr, Adam(0.01) x2, lr+b1+b2 tuned": lambda lr: ro.Stack(
            ro.Adam(lr), ro.Adam(0.01), ro.Adam(0.01)
        ).as_optax(),
        "log lr, Adam(0.01) x2, lr only": lambda lr: ro.Stack(
            _lr_only(lr), _level2(0.01), _upper(0.01), warmup=w, warmup_shape=s
        ).as_optax(),
        "default levels, lr+b1+b2 tuned": lambda lr: ro.Stack(
            ro.Adam(ro.hyper(lr, per="layer")),
            _level2(),
            _upper(0.01),
            warmup=w,
            warmup_shape=s,
        ).as_optax(),
        "default levels, upper b2 0.999": lambda lr: ro.Stack(
            _lr_only(lr),
            _level2(b2=0.999),
            _upper(0.01, 0.999),
            warmup=w,
            warmup_shape=s,
        ).as_optax(),
        "default levels, top Adam(0.1)": lambda lr: ro.Stack(
            _lr_only(lr), _level2(), _upper(0.1), warmup=w, warmup_shape=s
        ).as_optax(),
        "default levels, upper b1 0 (no momentum)": lambda lr: ro.Stack(
            _lr_only(lr),
            _level2(b1=0.0),
            _upper(0.01, b1=0.0),
            warmup=w,
            warmup_shape=s,
        ).as_optax(),
        "default levels, level-2 b1 0": lambda lr: ro.Stack(
            _lr_only(lr), _level2(b1=0.0), _upper(0.01), warmup=w, warmup_shape=s
        ).as_optax(),
        "default levels, level-2 b1 0.9 (the previous default)": lambda lr: ro.Stack(
            _lr_only(lr), _level2(b1=0.9), _upper(0.01), warmup=w, warmup_shape=s
        ).as_optax(),
        "upper steps unclipped (the default of 2026-12-02)": lambda lr: ro.Stack(
            _lr_only(lr),
            _level2(clip=None),
            _upper(0.01, clip=None),
            warmup=w,
            warmup_shape=s,
        ).as_optax(),
        "upper steps clipped at 2 both ways (the previous default)": lambda lr: (
            ro.Stack(
                _lr_only(lr),
                _level2(clip=2.0),
                _upper(0.01, clip=2.0),
                warmup=w,
                warmup_shape=s,
            ).as_optax()
        ),
        "level 2 ungated (the default of 2026-12-03)": level2_gated(None),
        "level 2's cuts untested (the previous default)": level2_gated((0.9, 100)),
        # The default's gate since 2026-12-07, written out: the row keeps the
        # name under which benchmarks/README.md measured it as a lead.
        "level 2's cut test from step 300 (a lead)": level2_gated((*GATE[:3], 300)),
        "level 2's cut test from step 101 (the default before 2026-12-07)": (
            level2_gated(GATE[:3])
        ),
        "level 1's lr unbounded (the previous default)": lambda lr: ro.Stack(
            _lr_only(lr, bounds=None), _level2(), _upper(0.01), warmup=w, warmup_shape=s
        ).as_optax(),
        "level 1's lr bounded by 0.1 (starts above it clipped)": lambda lr: ro.Stack(
            _lr_only(lr, bounds=(None, 0.1)),
            _level2(),
            _upper(0.01),
            warmup=w,
            warmup_shape=s,
        ).as_optax(),
        "one lr per array (the previous default)": lambda lr: ro.Stack(
            _lr_only(lr, per="leaf"), _level2(), _upper(0.01), warmup=w, warmup_shape=s
        ).as_optax(),
        "one lr for the model, bounded by 1": lambda lr: ro.Stack(
            _lr_only(lr, per="tree"), _level2(), _upper(0.01), warmup=w, warmup_shape=s
        ).as_optax(),
        "SGD-momentum tower, one lr per layer": lambda lr: _sgd_per_layer(lr),
        "SGD-momentum tower, level-2 b1 0": lambda lr: _sgd_level2(lr, 0.0),
        "SGD-momentum tower, level-2 b1 0.5": lambda lr: _sgd_level2(lr, 0.5),
        "no warm-up": lambda lr: ro.Stack(*ro.Stack[3](ro.Adam(lr)).levels).as_optax(),
        "warm-up 30 steps": lambda lr: ro.Stack[3](ro.Adam(lr), warmup=30).as_optax(),
        "warm-up 300 steps": lambda lr: ro.Stack[3](ro.Adam(lr), warmup=300).as_optax(),
        # level 2's cut test 200 steps after the warm-up, as at the default's 100
        "warm-up 300 steps, cut test from step 501": _level2_gated(
            (*GATE[:3], 500), 300, s
        ),
        "linear warm-up (the previous default)": lambda lr: ro.Stack[3](
            ro.Adam(lr), warmup_shape="linear"
        ).as_optax(),
        "one lr for every leaf (the previous default)": lambda lr: ro.Stack[3](
            ro.Adam(ro.hyper(lr))
        ).as_optax(),
        "default, RealTime(0.9)": lambda lr: ro.Stack[3](
            ro.Adam(lr), hypergradient=ro.RealTime(0.9)
        ),
        "default (Stack[3](Adam(lr)))": lambda lr: ro.Stack[3](ro.Adam(lr)).as_optax(),
        "level 1's lrs floored at 0.1 x prodigy's estimate (a probe)": _prodigy_floor,
        "the same floor, never raising an lr (a probe)": functools.partial(
            _prodigy_floor, ratchet=True
        ),
        "the same floor, gone after a 10x gradient spike (a probe)": (
            functools.partial(_prodigy_floor, spike=10.0)
        ),
        "ro.DistanceFloor(Stack[3](Adam(lr)))": lambda lr: ro.DistanceFloor(
            ro.Stack[3](ro.Adam(lr))
        ),
        "ro.HoldCuts(Stack[3](Adam(lr)))": lambda lr: ro.HoldCuts(
            ro.Stack[3](ro.Adam(lr))
        ),
    }


def rules() -> dict:
    """`--rules`: `Stack[3]` over each level-1 rule of the catalogue, with and
    without momentum, next to the best of the same rule's own 12-point grid
    (optax, same defaults): which rules the default towers make tuning-free."""
    s3 = lambda opt: ro.Stack[3](opt).as_optax()  # noqa: E731
    return {
        "Adam(lr)": (
            lambda lr: s3(ro.Adam(lr)),
            optax.adam,
        ),
        "Adam(lr, b1=0.5)": (
            lambda lr: s3(ro.Adam(lr, b1=ro.fixed(0.5))),
            lambda lr: optax.adam(lr, b1=0.5),
        ),
        "Adam(lr, b1=0)": (
            lambda lr: s3(ro.Adam(lr, b1=ro.fixed(0.0))),
            lambda lr: optax.adam(lr, b1=0.0),
        ),
        "SGD(lr, momentum=0.9)": (
            lambda lr: s3(ro.SGD(lr, momentum=0.9)),
            lambda lr: optax.sgd(lr, momentum=0.9),
        ),
        "SGD(lr, momentum=0.5)": (
            lambda lr: s3(ro.SGD(lr, momentum=0.5)),
            lambda lr: optax.sgd(lr, momentum=0.5),
        ),
        "SGD(lr)": (lambda lr: s3(ro.SGD(lr)), optax.sgd),
        "RMSProp(lr)": (
            lambda lr: s3(ro.RMSProp(lr)),
            lambda lr: optax.rmsprop(lr, decay=0.99, eps=1e-8),
        ),
        "AdaGrad(lr)": (
            lambda lr: s3(ro.AdaGrad(lr)),
            lambda lr: optax.adagrad(lr, eps=1e-10),
        ),
    }


def floored(loss) -> np.ndarray:
    """Final losses as compared: below `SOLVED` counts as solved, not finite as inf."""
    loss = np.asarray(loss, np.float64)  # a float32 1e36 / 1e-3 would overflow
    return np.maximum(np.where(np.isfinite(loss), loss, np.inf), SOLVED)


def ratios(loss: np.ndarray, best: float) -> np.ndarray:
    return floored(loss) / max(best, SOLVED)


def fmt(r: float) -> str:
    return "inf" if not np.isfinite(r) else (f"{r:.2f}" if r < 100 else f"{r:.3g}")


def reference_protocol(steps: int = 600) -> list[list]:
    """The reference paper's digits protocol; its package's medians were 8.0e-4,
    5.5e-4 and 5.0e-4 at heights 2, 3 and 4 (REFERENCES.md)."""
    task = digits_task()
    rows = []
    for h, ref in zip((2, 3, 4), (8.0e-4, 5.5e-4, 5.0e-4)):
        make = lambda lr, h=h: ro.Stack[h](ro.Adam(lr)).as_optax()  # noqa: E731
        loss = run_lrs(task, make, LRS, steps)[0]
        loss = np.where(np.isfinite(loss), loss, np.inf)
        rows.append([h, f"{np.median(loss):.2e}", f"{np.max(loss):.3g}", f"{ref:.1e}"])
    return rows


# Five probes written on 2026-12-05 after the two heads failed, to see how far
# that failure reaches (`--tasks raw`): unnormalised targets through saturating
# (tanh) and non-saturating (ReLU) networks, and unnormalised inputs.
RAW_TASKS = {
    "diabetes_tanh": _raw_diabetes_task(jnp.tanh, "diabetes, raw targets, tanh"),
    "diabetes_relu": _raw_diabetes_task(jax.nn.relu, "diabetes, raw targets, ReLU"),
    "row_sums": row_sums_task,
    "raw_pixels": raw_pixels_task,
    "offset": offset_task,
}

# Every set `--tasks` names, in the order they were written.
TASK_SETS = {
    "all": TASKS,
    "heldout": HELDOUT_TASKS,
    "probes": PROBE_TASKS,
    "fresh": FRESH_TASKS,
    "fresh2": FRESH2_TASKS,
    "fresh3": FRESH3_TASKS,
    "fresh4": FRESH4_TASKS,
    "fresh5": FRESH5_TASKS,
    "fresh6": FRESH6_TASKS,
    "fresh7": FRESH7_TASKS,
    "fresh8": FRESH8_TASKS,
    "fresh9": FRESH9_TASKS,
    "fresh10": FRESH10_TASKS,
    "fresh11": FRESH11_TASKS,
    "fresh12": FRESH12_TASKS,
    "fresh13": FRESH13_TASKS,
    "fresh14": FRESH14_TASKS,
    "fresh15": FRESH15_TASKS,
    "fresh16": FRESH16_TASKS,
    "fresh17": FRESH17_TASKS,
    "fresh18": FRESH18_TASKS,
    "fresh19": FRESH19_TASKS,
    "fresh20": FRESH20_TASKS,
    "fresh21": FRESH21_TASKS,
    "fresh22": FRESH22_TASKS,
    "fresh23": FRESH23_TASKS,
    "fresh24": FRESH24_TASKS,
    "fresh25": FRESH25_TASKS,
    "raw": RAW_TASKS,
}


def makers_of(*sets: str) -> dict:
    """The tasks of the named sets, by name, in order."""
    return {name: make for s in sets for name, make in TASK_SETS[s].items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument(
        "--seed", type=int, default=1, help="of the batches (the tables: 1)"
    )
    parser.add_argument(
        "--seeds",
        help="e.g. 1,2,3: only a table of the default towers (and the ablation's "
        "rows) under each seed's batches, with the targets met over all of them",
    )
    parser.add_argument(
        "--row",
        action="append",
        help="only this ablation row, or default tower of --seeds (its exact "
        "name; repeat for more): with --seeds, the table has these rows alone",
    )
    parser.add_argument("--png", default=next_to_me("tuning_free.png"))
    parser.add_argument(
        "--rules",
        action="store_true",
        help="only the level-1 rules table: Stack[3] of each catalogue rule",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="only a table of the default Stack[3](Adam(lr))'s train loss and "
        "test metric next to tuned Adam's",
    )
    parser.add_argument(
        "--untuned",
        action="store_true",
        help="only a table of what a user runs without tuning: Stack[3](Adam()) "
        "next to Adam at optax's default lr 1e-3 and prodigy, train loss and "
        "test metric",
    )
    args = parser.parse_args()
    global SEED
    SEED = args.seed
    groups = {name: list(tasks) for name, tasks in TASK_SETS.items()}
    keys = [k for key in args.tasks.split(",") for k in groups.get(key, [key])]
    makers = {**TASKS, **EXTRA_TASKS, **makers_of(*TASK_SETS)}
    if unknown := [k for k in keys if k not in makers]:
        parser.error(
            f"unknown task(s) {unknown}; known: {', '.join(TASK_SETS)}, {list(makers)}"
        )
    abl = {} if args.no_ablation else ablation()
    if args.row:
        known = {**SEEDED_TOWERS, **ablation()}
        if unknown := [r for r in args.row if r not in known]:
            parser.error(f"unknown row(s) {unknown}; known: {list(known)}")
        abl = {r: known[r] for r in args.row}
    if args.rules:
        return rules_table(keys, makers, args.steps)
    if args.metrics:
        return metrics_table(keys, makers, args.steps)
    if args.untuned:
        return untuned_table(keys, makers, args.steps)
    if args.seeds:
        seeds = [int(x) for x in args.seeds.split(",")]
        rows = abl if args.row else {**SEEDED_TOWERS, **abl}
        return seeds_table(keys, makers, args.steps, seeds, rows)
    grid, once = towers(), defaults()
    results = {}  # task name -> {method: (losses, metrics)}
    for key in keys:
        task = makers[key]()
        res = results[task.name] = {"metric": task.metric_name}
        for name, make in {**grid, **abl}.items():
            res[name] = run_lrs(task, make, LRS, args.steps)
        for name, make in once.items():
            res[name] = run_lrs(task, make, LRS[:1], args.steps)
        best = best_finite(res["Adam (grid)"][0])
        res["best"] = best
        print(f"{task.name}: tuned Adam {best:.4g}", flush=True)
    seed = f"; batches of seed {SEED}" if SEED != 1 else ""
    print(f"\n{machine()}; {args.steps} steps; 12 initial lrs from 1e-5 to 1{seed}\n")
    summary_header = ["method"] + [t for t in results]
    summary = []
    for name in [*grid, *once]:
        row = [name]
        for t, res in results.items():
            r = ratios(res[name][0], res["best"])
            cell = (
                fmt(np.median(r))
                if len(r) == 1
                else f"{fmt(np.median(r))} / {fmt(np.max(r))}"
            )
            row.append(cell)
        summary.append(row)
    print(
        "Final train loss / tuned Adam's (median / worst over the 12 initial lrs; "
        "one number: a single run at the defaults)\n"
    )
    print(table(summary_header, summary) + "\n")
    # Final train loss against prodigy's at its defaults (solved counts as equal).
    verdicts = {"Stack[3](Adam()) vs prodigy": [], "Stack[3](Adam(lr)), median": []}
    for res in results.values():
        prodigy = max(res["prodigy"][0][0], SOLVED)
        for name, loss in zip(
            verdicts,
            (res["Stack[3](Adam())"][0][0], np.median(res["Stack[3](Adam(lr))"][0])),
        ):
            loss = max(loss, SOLVED)
            verdicts[name].append(
                "tie" if loss == prodigy else ("win" if loss < prodigy else "loss")
            )
    print(table(summary_header, [[k, *v] for k, v in verdicts.items()]))
    print()
    for t, res in results.items():
        rows = []
        for name in [*grid, *once]:
            loss, metric = res[name]
            rows.append(
                [
                    name,
                    f"{np.median(loss):.4g}",
                    f"{np.max(loss):.4g}",
                    f"{np.nanmedian(metric):.4f}",
                ]
            )
        print(f"**{t}** (tuned Adam {res['best']:.4g}; metric: {res['metric']})\n")
        print(
            table(["method", "median final loss", "worst", "median metric"], rows)
            + "\n"
        )
    if abl:
        rows = []
        for name in abl:
            row = [name]
            for res in results.values():
                r = ratios(res[name][0], res["best"])
                row.append(f"{fmt(np.median(r))} / {fmt(np.max(r))}")
            rows.append(row)
        print("Ablation: Stack[3] variants, ratio to tuned Adam (median / worst)\n")
        print(table(summary_header, rows) + "\n")
    if "digits" in keys:
        print(
            "Reference protocol (digits MLP, 600 steps, batch 128; final train loss)\n"
        )
        print(
            table(
                ["height", "median", "worst", "reference package median"],
                reference_protocol(),
            )
            + "\n"
        )
    if args.png:
        plot(results, grid, once, args.png)


SEEDED_TOWERS = {  # `--seeds`: the towers swept over the initial lr
    "Stack[3](Adam(lr))": lambda lr: ro.Stack[3](ro.Adam(lr)).as_optax(),
    "Stack[3](SGD(lr, momentum=0.9))": lambda lr: ro.Stack[3](
        ro.SGD(lr, momentum=0.9)
    ).as_optax(),
}


ISSUE_SIX = ["digits", "cancer", "char", "quadratic", "cnn", "rnn"]  # prodigy target
AT_DEFAULTS = ["Stack[3](Adam())", "prodigy"]  # `--seeds`: one run each


def below(loss, other) -> np.ndarray:
    """Where `loss` ends below `other` (both solved, or both not finite: equal)."""
    return floored(loss) < floored(other)


def seeds_table(keys, makers, steps: int, seeds: list[int], rows: dict) -> None:
    """`--seeds`: each tower's ratios to tuned Adam under each seed's batches
    (tuned Adam too is that seed's best), and how many of the targets (median
    <= 1.5x, worst <= 3x) it meets over every task and seed; then
    `Stack[3](Adam())` and prodigy at their defaults, and per initial lr how
    often each tower ends below prodigy."""
    global SEED
    header = ["method"]
    cells = {name: [] for name in [*rows, *AT_DEFAULTS]}
    met = {name: 0 for name in rows}
    logs = {name: [] for name in rows}  # log median, log worst
    starts = {name: {} for name in rows}  # "task/seed" -> ratio per initial lr
    wins = {name: {} for name in rows}  # "task/seed" -> below prodigy per lr
    zero = {}  # "task/seed" -> `Stack[3](Adam())` below prodigy
    makes = {name: make for name, make in defaults().items() if name in AT_DEFAULTS}
    for key in keys:
        task = makers[key]()
        header.append(task.name)
        per = {name: [] for name in cells}
        for seed in seeds:
            SEED = seed
            adam = run_lrs(task, optax.adam, LRS, steps)[0]
            best = best_finite(adam)
            once = {
                n: run_lrs(task, make, LRS[:1], steps)[0] for n, make in makes.items()
            }
            for name, loss in once.items():
                per[name].append(fmt(float(ratios(loss, best)[0])))
            prodigy = once["prodigy"][0]
            zero[f"{key}/{seed}"] = bool(below(once[AT_DEFAULTS[0]][0], prodigy))
            for name, make in rows.items():
                loss = run_lrs(task, make, LRS, steps)[0]
                r = ratios(loss, best)
                starts[name][f"{task.name}/{seed}"] = r
                wins[name][f"{task.name}/{seed}"] = below(loss, prodigy)
                med, worst = np.median(r), np.max(r)
                per[name].append(f"{fmt(med)} / {fmt(worst)}")
                met[name] += int(med <= 1.5) + int(worst <= 3)
                logs[name].append(np.log(np.minimum([med, worst], 1e6)))
            print(f"{task.name}, seed {seed}: tuned Adam {best:.4g}", flush=True)
        for name in cells:
            cells[name].append(" ; ".join(per[name]))
    print(
        f"\n{machine()}; {steps} steps; 12 initial lrs from 1e-5 to 1; batches of "
        f"seeds {', '.join(map(str, seeds))}\n\nFinal train loss / that seed's tuned "
        "Adam's (median / worst over the 12 initial lrs; one number: one run at "
        "the defaults), seeds separated by ;\n"
    )
    print(table(header, [[name, *cells[name]] for name in cells]) + "\n")
    n = 2 * len(keys) * len(seeds)
    summary = [
        [
            name,
            f"{met[name]} of {n}",
            *(fmt(float(np.exp(np.mean(logs[name], axis=0)[i]))) for i in (0, 1)),
        ]
        for name in rows
    ]
    print(
        table(
            ["method", "targets met", "geometric mean median", "geometric mean worst"],
            summary,
        )
    )
    six = [
        sum(zero[f"{k}/{s}"] for k in ISSUE_SIX if f"{k}/{s}" in zero) for s in seeds
    ]
    print(
        f"\n{AT_DEFAULTS[0]} ends below prodigy on {sum(zero.values())} of the "
        f"{len(zero)} task-seeds; on the six issue tasks (where run) "
        f"{', '.join(map(str, six))} under seeds {', '.join(map(str, seeds))}"
    )
    for name in rows:
        print(f"\n{name} by initial lr, over the {n // 2} task-seeds\n")
        print(table(*per_start(starts[name], wins[name])))


def per_start(runs: dict[str, np.ndarray], wins: dict | None = None) -> tuple:
    """Header and rows: per initial lr, the ratios' geometric mean and median, how
    many exceed 1.5x and 3x, (with `wins`) how many end below prodigy, and which
    exceed 3x (ratios above 1e6 or not finite count as 1e6)."""
    r = np.array(list(runs.values()))
    r = np.where(np.isfinite(r), np.minimum(r, 1e6), 1e6)
    w = None if wins is None else np.array([wins[k] for k in runs])
    rows = []
    for j, lr in enumerate(LRS):
        c = r[:, j]
        over = [f"{k} {fmt(v)}" for k, v in zip(runs, c) if v > 3]
        rows.append(
            [
                f"{lr:.2g}",
                fmt(float(np.exp(np.mean(np.log(c))))),
                fmt(float(np.median(c))),
                int(np.sum(c > 1.5)),
                int(np.sum(c > 3)),
                *([] if w is None else [int(np.sum(w[:, j]))]),
                ", ".join(over),
            ]
        )
    header = ["initial lr", "geometric mean", "median", "> 1.5x", "> 3x"]
    header += [] if w is None else ["below prodigy"]
    return [*header, "above 3x"], rows


def rules_table(keys: list[str], makers: dict, steps: int) -> None:
    header, rows = ["level 1 of `Stack[3]`"], {name: [name] for name in rules()}
    for key in keys:
        task = makers[key]()
        header.append(task.name)
        adam = run_lrs(task, optax.adam, LRS, steps)[0]
        best = best_finite(adam)
        for name, (tower, plain) in rules().items():
            r = ratios(run_lrs(task, tower, LRS, steps)[0], best)
            own = np.min(ratios(run_lrs(task, plain, LRS, steps)[0], best))
            rows[name].append(f"{fmt(np.median(r))} / {fmt(np.max(r))} ({fmt(own)})")
        print(f"{task.name}: tuned Adam {best:.4g}", flush=True)
    print(f"\n{machine()}; {steps} steps; 12 initial lrs from 1e-5 to 1\n")
    print(
        "Final train loss / tuned Adam's: the tower's median / worst over the 12 "
        "initial lrs (in brackets: the best of the same rule's own grid)\n"
    )
    print(table(header, list(rows.values())))


def metrics_table(keys: list[str], makers: dict, steps: int) -> None:
    """Per task, the default `Stack[3](Adam(lr))` over the 12 initial lrs next to
    tuned Adam (its grid's lowest final train loss): the train loss ratio, and
    the test metric each ends at, so that a gap in train loss can be read as
    underfitting or as slower memorisation of the training set."""
    header = [
        "task",
        "test metric",
        "tuned Adam: lr",
        "train loss",
        "test metric",
        "tower / tuned: median / worst",
        "tower's test metric: median (min-max)",
    ]
    rows = []
    for key in keys:
        task = makers[key]()
        loss, metric = run_lrs(task, optax.adam, LRS, steps)
        i = int(np.nanargmin(np.where(np.isfinite(loss), loss, np.nan)))
        tower_loss, tower_metric = run_lrs(
            task, SEEDED_TOWERS["Stack[3](Adam(lr))"], LRS, steps
        )
        r = ratios(tower_loss, loss[i])
        rows.append(
            [
                task.name,
                task.metric_name,
                f"{LRS[i]:.3g}",
                f"{loss[i]:.3g}",
                f"{metric[i]:.4g}",
                f"{fmt(np.median(r))} / {fmt(np.max(r))}",
                f"{np.median(tower_metric):.4g} ({np.min(tower_metric):.4g}-"
                f"{np.max(tower_metric):.4g})",
            ]
        )
        print(f"{task.name}: done", flush=True)
    print(f"\n{machine()}; {steps} steps; 12 initial lrs from 1e-5 to 1; seed {SEED}\n")
    print(table(header, rows))


UNTUNED = {
    "Stack[3](Adam())": lambda _: ro.Stack[3](ro.Adam()).as_optax(),
    "Adam(1e-3)": lambda _: optax.adam(1e-3),
    "prodigy": lambda _: optax.contrib.prodigy(),
}


def untuned_table(keys: list[str], makers: dict, steps: int) -> None:
    """Per task, one run each of what a user runs without tuning: the zero-argument
    tower, Adam at optax's default lr and prodigy, as final train loss over tuned
    Adam's (its grid's lowest) and the test metric each ends at; then how often
    the tower ends below (by more than 1 %), level with or above each other."""
    names = list(UNTUNED)
    header = ["task", "test metric", "tuned Adam: train loss"] + [
        f"{n}: loss / tuned, test metric" for n in names
    ]
    rows, logs = [], {n: [] for n in names}
    loss_wins = {n: [0, 0, 0] for n in names[1:]}
    metric_wins = {n: [0, 0, 0] for n in names[1:]}
    for key in keys:
        task = makers[key]()
        loss, _ = run_lrs(task, optax.adam, LRS, steps)
        best = max(best_finite(loss), SOLVED)
        ends = {}
        for n in names:
            end, m = run_lrs(task, UNTUNED[n], np.zeros(1), steps)
            ends[n] = (float(ratios(end, best)[0]), float(m[0]))
            logs[n].append(np.log(ends[n][0]))
        ours, ours_metric = ends[names[0]]
        higher = higher_is_better(task.metric_name)
        for n in names[1:]:
            r, m = ends[n]
            loss_wins[n][0 if ours < 0.99 * r else 1 if ours <= 1.01 * r else 2] += 1
            if np.isclose(ours_metric, m, rtol=1e-3, atol=0):
                metric_wins[n][1] += 1
            else:
                metric_wins[n][0 if (ours_metric > m) == higher else 2] += 1
        rows.append(
            [task.name, task.metric_name, f"{best:.3g}"]
            + [f"{fmt(ends[n][0])} / {ends[n][1]:.4g}" for n in names]
        )
        print(f"{task.name}: done", flush=True)
    print(f"\n{machine()}; {steps} steps; seed {SEED}\n")
    print(table(header, rows))
    print(
        "\nGeometric means of the loss ratios: "
        + ", ".join(f"{n} {np.exp(np.mean(logs[n])):.2f}x" for n in names)
    )
    for n in names[1:]:
        (lw, lt, ll), (mw, mt, ml) = loss_wins[n], metric_wins[n]
        print(
            f"{names[0]} against {n}: train loss lower on {lw}, within 1 % on {lt}, "
            f"higher on {ll} of {len(keys)}; test metric better on {mw}, equal "
            f"(0.1 %) on {mt}, worse on {ml}"
        )


def higher_is_better(metric_name: str) -> bool:
    """Whether a larger test metric is better: accuracies and the concordance
    index; every other metric of the tasks is a loss, an error or a cost."""
    return any(word in metric_name for word in ("accuracy", "concordance"))


def plot(results, grid, once, path):
    plt = pyplot()
    n = len(results)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (t, res) in zip(axes.flat, results.items()):
        for i, name in enumerate(grid):
            ax.plot(
                LRS,
                np.maximum(res[name][0], SOLVED),
                "o-",
                ms=3,
                lw=1.2,
                color=f"C{i}",
                label=name,
            )
        for j, name in enumerate(
            ["prodigy", "mechanize(adam(1e-3))", "Stack[3](Adam())"]
        ):
            ax.axhline(
                max(res[name][0][0], SOLVED),
                ls="--",
                lw=1,
                color=f"C{len(grid) + j}",
                label=f"{name} (default)",
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="initial lr",
            ylabel="final train loss",
            title=t,
        )
    for ax in axes.flat[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.1 / rows, 1, 1))
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
