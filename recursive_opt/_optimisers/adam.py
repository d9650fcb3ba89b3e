import numbers
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Int, PyTree

from .._hyper import Hyper, HyperSpec, declare, is_zero
from .._optimiser import AbstractElementwiseOptimiser
from ._common import bias_correction, ema, safe_sqrt


class AdamState(eqx.Module):
    count: Int[Array, ""]
    mu: PyTree[Array]
    nu: PyTree[Array]
    # The running mean of |gradient| (`Adam(normalise=...)`); None without it.
    scale: PyTree[Array] | None = None
    # The running mean of the gradients at the gate's decay (`Adam(gate=...)`),
    # and with a cut test the long one after it (a leading axis of 2 per leaf);
    # None without a gate.
    signal: PyTree[Array] | None = None


class Adam(AbstractElementwiseOptimiser):
    """Adam, and AdamW when `weight_decay > 0`.

    Matches `optax.adam(lr, b1, b2, eps)` (and `optax.adamw(..., weight_decay)`):
    moments start at 0, are bias-corrected, eps is added outside the square root,
    and decoupled weight decay adds `weight_decay * params` to the direction before
    scaling by `-lr`. (The original PyTorch package starts the second moment at eps
    instead of 0.)

    **Arguments:**

    - `lr`: learning rate; tuned, `"log"` by default. Not given (None), it is
        1e-3, optax's default, except as level 1 of the tuning-free
        `Stack[d](ro.Adam())` (d >= 2), which starts it at 1e-2 (see `Stack`).
    - `b1`, `b2`: moment decay rates; tuned, `"logit"` by default.
    - `eps`: fixed, `"log"` by default.
    - `weight_decay`: 0 (the default) switches it off; otherwise fixed, `"log"`.
    - `normalise`: None (the default) or a decay d in (0, 1): each gradient
        coordinate is divided by the running mean of its absolute value (decay d,
        bias-corrected, including this step's) before it enters the moments. The
        step then does not slow down when the gradients shrink steadily (by less
        than a factor 1 - d a step), as Adam's does while its second moment still
        remembers larger ones. Meant for an upper level, whose gradients
        (hypergradients) shrink by orders of magnitude during training; not a
        default (`benchmarks/README.md`, tuning_free.py's table of what was
        tried). A coordinate whose gradients are 0 up to rounding gets full steps
        from the rounding: use it where they are not (a learning rate's
        hypergradients; not those of Adam's betas at the first step, exactly 0
        in exact arithmetic). Not in optax.
    - `clip`: None (the default), a bound c > 0, or a pair `(low, high)`: each
        coordinate's normalised step m_hat / (sqrt(v_hat) + eps) is clipped to
        [-c, c] (or [low, high], with low < 0 < high and None for no bound on
        that side) before weight decay and the learning rate scale it, so no step
        moves a coordinate by more than c * lr (Adafactor's update clipping,
        Shazeer & Stern 2018, per coordinate). Adam's step is at most about 1
        while the gradients keep their size, but up to (1 - b1) / sqrt(1 - b2)
        when they jump after a quiet stretch (5 at b1 = 0.5, b2 = 0.99). The
        coordinate moves by -lr times the step, so `(low, None)` bounds only its
        rises, by -low * lr a step: over a log learning rate, raises are bounded
        and cuts free (the upper levels of `Stack[d](opt)`). Equals
        `optax.chain(optax.scale_by_adam(b1, b2, eps), optax.clip(c),
        optax.scale(-lr))` (with `optax.add_decayed_weights` before the scale for
        AdamW; a pair clips with `jnp.clip(step, low, high)`).
    - `gate`: None (the default) or a pair `(decay, after)`, decay in (0, 1) and
        after >= 0 an int: from step `after + 1` on, a coordinate's normalised
        step (after `clip`) that would raise it, i.e. is negative, is multiplied
        by r = min(1, s_hat^2 / v_hat), s_hat a second running mean of the
        gradients (decay `decay`, bias-corrected, including this step's) and
        v_hat the second moment; steps that lower a coordinate keep full size.
        r is about 1 while the gradients keep one sign and about (1 - decay) /
        (1 + decay) (0.05 at 0.9) where they are zero-mean noise, so noise does
        not random-walk the coordinate upwards. Over a log learning rate: the lr
        below is raised only as fast as the one-step signal is sure of it, and
        cut freely (`after` = 100 at level 2 of `Stack[d](opt)` over an
        adaptive rule: the steps it needs to cross the range 1e-5..1 at its
        speed). A triple `(decay, after, z)`, z > 0 and after >= 2, also tests
        the cuts: from step `after + 1` on, a step that would lower a coordinate
        is multiplied by min(1, t^2 / z^2), t = l_hat / sqrt((v_hat - l_hat^2)
        (1 - D) / (1 + D)), l_hat a long running mean of the gradients (decay D
        = 1 - 1 / after, bias-corrected) and t its size in standard errors
        where it says lower (the cut's sign), 0 where it does not (1 where
        l_hat^2 >= v_hat): a cut passes at full size once the last `after`
        steps' mean says cut by z standard errors, and zero-mean noise walks the
        coordinate neither way. Over a log learning rate, where a pair leans it
        down over long runs (noise passes as cuts at full speed). A quadruple
        `(decay, after, z, cuts_from)`, cuts_from >= after an int, starts the cut
        test at step `cuts_from + 1` instead (cuts pass at full size until then;
        raises are gated from `after + 1` as before): time to undo, at full
        speed, lrs raised too far while the long mean still holds the raises.
        Level 2 of `Stack[d](opt)` over an adaptive rule: `(0.9, 100, 1.0,
        300)` (`_defaults.py` says why). Not in optax.

    ```python
    tower = ro.Stack[3](ro.Adam(1e-3))
    ```
    """

    lr: Hyper
    b1: Hyper
    b2: Hyper
    eps: Hyper
    weight_decay: Hyper | None
    uses_params: bool = eqx.field(static=True)
    normalise: float | None = eqx.field(static=True)
    clip: float | tuple[float | None, float | None] | None = eqx.field(static=True)
    gate: (
        tuple[float, int]
        | tuple[float, int, float]
        | tuple[float, int, float, int]
        | None
    ) = eqx.field(static=True)
    # Columns cost divisions: kept, not recomputed. That holds for the learning
    # rate's column too, although it could be recomputed from the moments alone
    # (no record at all): on XLA:CPU that made a depth-3 tower's step on a 4.8M
    # MLP cost 1.40x optax Adam instead of 1.10x (benchmarks/overhead.py).
    recompute_jacobian: ClassVar[bool] = False

    def __init__(
        self,
        lr: ArrayLike | HyperSpec | None = None,
        b1: ArrayLike | HyperSpec = 0.9,
        b2: ArrayLike | HyperSpec = 0.999,
        eps: ArrayLike | HyperSpec = 1e-8,
        weight_decay: ArrayLike | HyperSpec = 0.0,
        normalise: float | None = None,
        clip: float | tuple[float | None, float | None] | None = None,
        gate: (
            tuple[float, int]
            | tuple[float, int, float]
            | tuple[float, int, float, int]
            | None
        ) = None,
    ):
        given = lr is not None
        self.lr = declare("Adam", "lr", lr if given else 1e-3, "log", True, given)
        self.b1 = declare("Adam", "b1", b1, "logit", True)
        self.b2 = declare("Adam", "b2", b2, "logit", True)
        self.eps = declare("Adam", "eps", eps, "log", False)
        if is_zero(weight_decay):
            self.weight_decay = None
        else:
            self.weight_decay = declare(
                "Adam", "weight_decay", weight_decay, "log", False
            )
        self.uses_params = self.weight_decay is not None
        self.normalise = _real_option("normalise", normalise, 0, 1, "a decay in (0, 1)")
        self.clip = _clip_option(clip)
        self.gate = _gate_option(gate)

    @property
    def _bounds(self) -> tuple[float | None, float | None]:
        """`clip` as (low, high), None for no bound on a side."""
        if self.clip is None or isinstance(self.clip, tuple):
            return self.clip or (None, None)
        return -self.clip, self.clip

    def init_state(self, params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        scale = None if self.normalise is None else zeros
        if self.gate is None:
            signal = None
        elif len(self.gate) == 2:
            signal = zeros
        else:  # the short and the long running means, stacked per leaf
            signal = jax.tree.map(lambda p: jnp.zeros((2, *p.shape), p.dtype), params)
        return AdamState(jnp.zeros([], jnp.int32), zeros, zeros, scale, signal)

    def _normalised(self, grads, scale, count):
        """The gradients divided by the running mean of their absolute values, as
        of step `count` (1-based); 0 where that mean is 0."""
        d = self.normalise

        def leaf(g, s):
            s_hat = bias_correction(s, d, count)
            positive = s_hat > 0
            return jnp.where(positive, g / jnp.where(positive, s_hat, 1), 0)

        return jax.tree.map(leaf, grads, scale)

    def rule(self, grads, state, params, hp):
        count = optax.safe_increment(state.count)
        scale = None
        if self.normalise is not None:
            d = self.normalise
            scale = jax.tree.map(lambda g, s: ema(jnp.abs(g), s, d), grads, state.scale)
            grads = self._normalised(grads, scale, count)

        def leaf(g, m0, v0, p, lr, b1, b2, eps, wd, s0):
            m, v = ema(g, m0, b1), ema(g**2, v0, b2)
            step = _direction(m, v, None, count, b1, b2, eps, None, self._bounds)
            s = None
            if s0 is not None:
                if len(self.gate) == 2:
                    s = ema(g, s0, self.gate[0])
                else:
                    long = 1 - 1 / self.gate[1]
                    s = jnp.stack([ema(g, s0[0], self.gate[0]), ema(g, s0[1], long)])
                step = step * self._gate_factor(step, v, s, count, b2)[0]
            direction = step if wd is None else step + wd * p
            return -lr * direction, m, v, s

        updates, mu, nu, signal = self._map(
            leaf, grads, state.mu, state.nu, params, hp, state.signal
        )
        signal = None if self.gate is None else signal
        return updates, AdamState(count, mu, nu, scale, signal)

    def _gate_factor(self, step, v, s, count, b2):
        """(factor, d factor / d v_hat) of `gate` for one leaf: the factor
        multiplies the (clipped) normalised step `step`, r = min(1, s_hat^2 /
        v_hat) where that step is negative from step `after + 1` on; with a cut
        test, min(1, t^2 / z^2) (or 0) where it is positive from step
        `cuts_from + 1` on (`after + 1` for a triple); else 1."""
        decay, after = self.gate[:2]
        tested = len(self.gate) >= 3
        cuts_from = self.gate[3] if len(self.gate) == 4 else after
        v_hat = bias_correction(v, b2, count)
        s_hat = bias_correction(s[0] if tested else s, decay, count)
        positive = v_hat > 0
        safe_v = jnp.where(positive, v_hat, 1)
        r = jnp.where(positive, s_hat * s_hat / safe_v, 0)
        late = count > after
        gated = (step < 0) & late
        factor = jnp.where(gated, jnp.minimum(r, 1), 1)
        slope = jnp.where(gated & (r < 1), -r / safe_v, 0)
        if tested:  # t^2 / z^2 = l_hat^2 / (k var), d / d v_hat = -(t^2 / z^2) / var
            z, long = self.gate[2], 1 - 1 / after
            l_hat = bias_correction(s[1], long, count)
            var = v_hat - l_hat * l_hat
            sure = var <= 0  # the long mean is all of the second moment
            safe_var = jnp.where(sure, 1, var)
            k = z * z * (1 - long) / (1 + long)
            q = jnp.where(sure, 1, l_hat * l_hat / (k * safe_var))
            says_cut = l_hat > 0  # a positive step lowers the coordinate
            cut = (step > 0) & (count > cuts_from)
            factor = jnp.where(cut, jnp.where(says_cut, jnp.minimum(q, 1), 0), factor)
            dq = jnp.where(says_cut & ~sure & (q < 1), -q / safe_var, 0)
            slope = jnp.where(cut, dq, slope)
        return factor.astype(step.dtype), slope.astype(step.dtype)

    def jacobian_after(self, grads, state, params, hp, names):
        # In closed form from the step's gradients and the moments it wrote, with
        # d m / d b1 = m0 - g = (m - g) / b1 (and the same for v), so the old
        # moments need not be kept. Divisions by scalars are multiplications by
        # their reciprocals and each column has one or two divisions per
        # coordinate: on large models these columns are a tower's main extra cost.
        # Before any step (count 0, all zeros) every column is 0. With `normalise`
        # the moments saw the gradients divided by the step's running mean, which
        # does not depend on the hyperparameters: the same columns, of those.
        count = jnp.maximum(state.count, 1)
        if self.normalise is not None:
            grads = self._normalised(grads, state.scale, count)

        def leaf(g, m, v, p, lr, b1, b2, eps, wd, sig):
            t = count.astype(g.dtype)
            c1, c2 = 1 - b1**count, 1 - b2**count
            v_hat = v * (1 / c2)
            root = safe_sqrt(v_hat)
            s = 1 / (root + eps)  # d direction / d m_hat
            m_hat = m * (1 / c1)
            step = m_hat * s
            if self.clip is not None:  # clipped coordinates: d step / d beta = 0
                low, high = self._bounds
                inside = jnp.ones_like(step, bool)
                if low is not None:
                    inside = inside & (step > low)
                if high is not None:
                    inside = inside & (step < high)
                s = s * inside.astype(step.dtype)
                step = jnp.clip(step, low, high)
            # With `gate` the step is step * factor, the factor a function of v_hat
            # alone (slope: its derivative) and 1 or min(1, r) by the step's sign.
            factor, slope = (
                (1, 0) if sig is None else self._gate_factor(step, v, sig, count, b2)
            )
            gated_step = step * factor
            columns = []
            for name in names:
                if name == "lr":
                    col = -(gated_step if wd is None else gated_step + wd * p)
                elif name == "b1":
                    a1, a2 = 1 / (b1 * c1), t * b1 ** (count - 1) / c1**2
                    col = (-lr) * s * ((m - g) * a1 + m * a2) * factor
                elif name == "b2":
                    a1, a2 = 1 / (b2 * c2), t * b2 ** (count - 1) / c2**2
                    dv_hat = (v - g * g) * a1 + v * a2
                    # d root / d v_hat = 1 / (2 root); where v_hat = 0 (g and v
                    # all 0), dv_hat = 0 too and the floor keeps 0 / 0 away.
                    floor = jnp.sqrt(jnp.finfo(g.dtype).tiny)
                    col = (lr * 0.5) * m_hat * s * s * dv_hat / jnp.maximum(root, floor)
                    col = col * factor - lr * step * slope * dv_hat
                elif name == "eps":
                    col = lr * m_hat * s * s * factor
                else:  # weight_decay
                    col = -lr * p
                columns.append(col)
            return tuple(columns)

        columns = self._map(leaf, grads, state.mu, state.nu, params, hp, state.signal)
        return dict(zip(names, columns))

    def columns_from_state(self, names):
        # The learning rate's column is the direction, from the moments and the
        # count alone (not with weight decay: it reads the step's parameters).
        # Kept anyway unless a scheme prefers recomputing (`recompute_jacobian`).
        return names == ("lr",) and self.weight_decay is None

    def _map(self, leaf, grads, mu, nu, params, hp, signal=None):
        """`leaf` over the leaves; its outputs (a tuple) as one tree each (a None
        output as a tree of Nones)."""
        leaves, treedef = jax.tree.flatten(grads)
        nones = [None] * len(leaves)
        wd = hp.get("weight_decay") if self.weight_decay is not None else None
        trees = (mu, nu, params, hp["lr"], hp["b1"], hp["b2"], hp["eps"], wd, signal)
        args = [treedef.flatten_up_to(x) if x is not None else nones for x in trees]
        outs = [leaf(*xs) for xs in zip(leaves, *args)]
        return tuple(treedef.unflatten(o) for o in zip(*outs))


def _real_option(name: str, value, low: float, high: float, needs: str):
    """A static option of Adam: None, or a real number strictly between `low` and
    `high`, as a float."""
    if value is None:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and low < value < high):
        raise ValueError(f"Adam({name}=...) needs None or {needs}, got {value!r}.")
    return float(value)


def _clip_option(clip):
    """`Adam(clip=...)`: None, a finite bound > 0 (as a float), or a pair (low,
    high) of finite bounds low < 0 < high, either None (as floats or None, not
    both None)."""
    if not isinstance(clip, (tuple, list)):
        return _real_option("clip", clip, 0, float("inf"), _CLIP_NEEDS)
    error = ValueError(f"Adam(clip=...) needs {_CLIP_NEEDS}, got {clip!r}.")
    if len(clip) != 2 or all(b is None for b in clip):
        raise error
    try:
        low = _real_option("clip", clip[0], -float("inf"), 0, _CLIP_NEEDS)
        high = _real_option("clip", clip[1], 0, float("inf"), _CLIP_NEEDS)
    except ValueError:
        raise error from None
    return low, high


def _gate_option(gate):
    """`Adam(gate=...)`: None, a pair (decay, after) with decay in (0, 1) (as a
    float) and after an int >= 0, a triple (decay, after, z) with after >= 2
    and z > 0 finite (as a float), or a quadruple (decay, after, z, cuts_from)
    with cuts_from an int >= after."""
    if gate is None:
        return None
    error = ValueError(
        "Adam(gate=...) needs None, a pair (decay, after) with decay in (0, 1)"
        " and after an int >= 0, a triple (decay, after, z) with after >= 2"
        " and z > 0, or a quadruple (decay, after, z, cuts_from) with cuts_from"
        f" an int >= after, got {gate!r}."
    )
    if not isinstance(gate, (tuple, list)) or len(gate) not in (2, 3, 4):
        raise error
    decay, after = gate[:2]
    try:
        decay = _real_option("gate", decay, 0, 1, "")
        z = _real_option("gate", gate[2], 0, float("inf"), "") if gate[2:] else None
    except ValueError:
        raise error from None

    def integral(n):
        return isinstance(n, numbers.Integral) and not isinstance(n, bool)

    if decay is None or not integral(after) or after < (0 if len(gate) == 2 else 2):
        raise error
    if len(gate) == 2:
        return decay, int(after)
    if z is None:
        raise error
    if len(gate) == 3:
        return decay, int(after), z
    cuts_from = gate[3]
    if not integral(cuts_from) or cuts_from < after:
        raise error
    return decay, int(after), z, int(cuts_from)


_CLIP_NEEDS = (
    "None, a finite bound > 0 or a pair (low, high) with low < 0 < high"
    " (None for no bound on one side)"
)


def _direction(m, v, p, count, b1, b2, eps, wd, bounds=(None, None)):
    m_hat, v_hat = bias_correction(m, b1, count), bias_correction(v, b2, count)
    direction = m_hat / (safe_sqrt(v_hat) + eps)
    if bounds != (None, None):
        direction = jnp.clip(direction, *bounds)
    return direction if wd is None else direction + wd * p
