"""Hyperparameter declarations, their transforms, and their resolution per tree."""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from ._custom_types import HyperParams

TransformName = Literal["log", "logit", "identity", "square", "tanh01"]
Per = Literal["tree", "layer", "leaf", "element"]
_PERS = ("tree", "layer", "leaf", "element")
# A range of values (not raw values); None leaves that side open.
Bounds = tuple[float | None, float | None]


@dataclasses.dataclass(frozen=True)
class _Transform:
    forward: Callable[[Array], Array]  # raw -> value, differentiable
    inverse: Callable[[Array], Array]  # value -> raw
    valid: Callable[[np.ndarray], np.ndarray]
    valid_range: str


TRANSFORMS: dict[str, _Transform] = {
    "log": _Transform(jnp.exp, jnp.log, lambda v: v > 0, "> 0"),
    "logit": _Transform(
        jax.nn.sigmoid,
        lambda v: jnp.log(v) - jnp.log1p(-v),
        lambda v: (v > 0) & (v < 1),
        "in the open interval (0, 1)",
    ),
    "identity": _Transform(lambda r: r, lambda v: v, np.isfinite, "any finite number"),
    "square": _Transform(jnp.square, jnp.sqrt, lambda v: v >= 0, ">= 0"),
    "tanh01": _Transform(
        lambda r: (jnp.tanh(r) + 1) / 2,
        lambda v: jnp.arctanh(2 * v - 1),
        lambda v: (v > 0) & (v < 1),
        "in the open interval (0, 1)",
    ),
}


@dataclasses.dataclass(frozen=True)
class HyperSpec:
    """A hyperparameter declaration, as returned by [`recursive_opt.hyper`][]."""

    value: ArrayLike
    transform: TransformName | None = None
    tune: bool = True
    per: Per = "tree"
    bounds: Bounds | None = None


def hyper(
    value: ArrayLike,
    transform: TransformName | None = None,
    tune: bool = True,
    per: Per = "tree",
    bounds: Bounds | None = None,
) -> HyperSpec:
    """Declare how a hyperparameter is parametrised and whether it is tuned.

    **Arguments:**

    - `value`: the initial (constrained) value, a scalar.
    - `transform`: how the raw value that the level above optimises maps to
        `value`: `"log"` (exp), `"logit"` (sigmoid), `"identity"`, `"square"` or
        `"tanh01"` ((tanh + 1) / 2). `None` takes the hyperparameter's default.
    - `tune`: whether the level above optimises it.
    - `per`: `"tree"` (one scalar), `"layer"` (one scalar per layer: the array
        leaves held by one dict or module below the root share one, such as a
        dense layer's weights and bias, and so do those of a list or tuple that
        is itself an entry of a list or tuple, such as the `(w, b)` of a
        `[(w, b), ...]` model; any other leaf directly under the root or in a
        list or tuple is a layer of its own), `"leaf"` (one scalar per array leaf
        of the optimised tree) or `"element"` (one per coordinate).
    - `bounds`: `(low, high)` values it must stay within (`None` for an open
        side). A tower enforces them when the level above writes a new value, so
        the optimiser never steps with a value out of range.

    **Returns:** a declaration to pass to an optimiser, e.g.
    `ro.SGD(lr=ro.hyper(0.1, transform="identity", per="leaf"))`.
    """
    if transform is not None and transform not in TRANSFORMS:
        raise ValueError(
            f"Unknown transform {transform!r}; choose one of {sorted(TRANSFORMS)}."
        )
    if per not in _PERS:
        raise ValueError(f"Unknown per={per!r}; choose one of {list(_PERS)}.")
    if not isinstance(tune, bool):
        raise ValueError(f"`tune` must be True or False, got {tune!r}.")
    if bounds is not None:
        bounds = check_bounds("bounds", bounds)
    return HyperSpec(value, transform, tune, per, bounds)


def check_bounds(where: str, pair: Any) -> Bounds:
    """`pair` as `(low, high)` floats or None; a `ValueError` says what is wrong."""
    if not (isinstance(pair, Sequence) and len(pair) == 2):
        raise ValueError(
            f"{where} must be a pair (low, high), got {pair!r}; use None for no "
            "bound on one side."
        )
    lo, hi = (None if b is None else float(b) for b in pair)
    for b in (lo, hi):
        if b is not None and not math.isfinite(b):
            raise ValueError(f"{where} must be finite numbers, got {pair!r}.")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"{where} needs low < high, got {pair!r}.")
    return lo, hi


def outside(values: ArrayLike, bounds: Bounds) -> np.ndarray:
    """Where concrete `values` lie outside `bounds` (`None`: no bound that side)."""
    lo, hi = bounds
    values = np.asarray(values, dtype=np.float64)
    return (values < (-np.inf if lo is None else lo)) | (
        values > (np.inf if hi is None else hi)
    )


def fixed(value: ArrayLike, transform: TransformName | None = None) -> HyperSpec:
    """A hyperparameter that is never tuned: `ro.hyper(value, tune=False)`.

    Without `transform`, a value on the edge of the optimiser's default transform
    (0 or 1, outside its open range) is stored as is: `ro.Adam(b1=ro.fixed(0.0))`
    is Adam without momentum.
    """
    return hyper(value, transform=transform, tune=False)


class Hyper(eqx.Module):
    """A hyperparameter as an optimiser holds it: raw array(s) plus static metadata.

    `raw` is a scalar until the hyperparameter is resolved against the tree it acts
    on; then, for `per="layer"`/`"leaf"`/`"element"`, it is a pytree shaped like
    that tree. For `per="layer"`, `groups` then numbers each leaf's layer (in
    flattening order): the values of one layer start equal, and the level above
    moves them by their layer's hypergradient (the sum of its leaves'), so they
    stay equal. Above level 1, a hyperparameter of any `per` but `"tree"` whose
    target holds the copies of a `per="layer"` value of the level below groups
    them the same way (`value_groups`).
    """

    raw: PyTree[Array]
    transform: str = eqx.field(static=True)
    tune: bool = eqx.field(static=True)
    per: str = eqx.field(static=True)
    # Whether the user declared it with `ro.hyper`/`ro.fixed` (not a plain float):
    # `Stack[d](opt)` keeps such a declaration, and fixes undeclared non-lr ones.
    declared: bool = eqx.field(static=True, default=False)
    bounds: Bounds | None = eqx.field(static=True, default=None)
    # False where the user left it at the optimiser's default (`Adam()`'s lr):
    # `Stack[d](opt)` may then start it where a tower starts best.
    given: bool = eqx.field(static=True, default=True)
    groups: tuple[int, ...] | None = eqx.field(static=True, default=None)

    @property
    def value(self) -> PyTree[Array]:
        return map_scalars(TRANSFORMS[self.transform].forward, self.raw)

    @classmethod
    def declare(
        cls,
        value: Any,
        transform: str,
        tune: bool = True,
        *,
        owner: str = "optimiser",
        name: str = "hyperparameter",
    ) -> "Hyper":
        """A hyperparameter field of an optimiser of your own: what its `__init__`
        stores for each argument, as the library's optimisers do.

        **Arguments:**

        - `value`: what the user passed: a scalar, or a declaration from
            [`recursive_opt.hyper`][] / [`recursive_opt.fixed`][], whose
            transform, tuning, `per` and bounds take precedence.
        - `transform`, `tune`: this hyperparameter's defaults, for a plain value
            (and the transform for a declaration that names none): e.g. `"log"`
            and tuned for a learning rate, `"logit"` for a decay in (0, 1).
        - `owner`, `name`: the optimiser's and the argument's names, for the
            error raised on an invalid value.

        **Returns:** the `Hyper` to store in the optimiser's field.

        ```python
        class Lion(ro.AbstractOptimiser):
            lr: ro.Hyper
            ...
            def __init__(self, lr=1e-4):
                self.lr = ro.Hyper.declare(lr, "log", owner="Lion", name="lr")
        ```
        """
        if transform not in TRANSFORMS:
            raise ValueError(
                f"Hyper.declare: transform must be one of {sorted(TRANSFORMS)}, "
                f"got {transform!r}"
            )
        return declare(owner, name, value, transform, tune)


def _check_value(owner: str, name: str, value: Any, transform: str) -> None:
    where = f"{owner}: hyperparameter `{name}`"
    if isinstance(value, jax.core.Tracer):
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise ValueError(f"{where} must be a float, got dtype {value.dtype}.")
        return  # Traced (under jit/vmap): the range cannot be checked here.
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise ValueError(f"{where} must be a real number, got {value!r}.")
    if callable(value):
        raise ValueError(
            f"{where} must be a real number, got the callable {value!r}. A "
            "schedule is not a hyperparameter here: pass its starting value, "
            "and a tower moves it (a tower's warm-up is its `warmup=`)."
        )
    try:
        arr = np.asarray(value)
    except Exception as e:
        raise ValueError(f"{where} must be a real number, got {value!r}.") from e
    if not (arr.dtype.kind in "iu" or jnp.issubdtype(arr.dtype, jnp.floating)):
        raise ValueError(f"{where} must be a real number, got {value!r}.")
    if arr.ndim != 0:
        raise ValueError(
            f"{where} must be a scalar, got shape {arr.shape}. Use "
            "ro.hyper(value, per='leaf') or per='element' for one value per leaf "
            "or per coordinate."
        )
    t = TRANSFORMS[transform]
    arr = arr.astype(np.float64)
    if not np.isfinite(arr) or not t.valid(arr):
        raise ValueError(
            f"{where} must be {t.valid_range} under the {transform!r} transform, "
            f"got {value!r}. Pass a value in that range, or choose another "
            "transform with ro.hyper(value, transform=...)."
            + (
                " To keep it there untuned, ro.fixed(value)."
                if _at_edge(arr, transform)
                else ""
            )
        )


def _at_edge(value: Any, transform: str) -> bool:
    """Whether a concrete scalar is 0 or 1 and just outside `transform`'s range."""
    if isinstance(value, (jax.core.Tracer, str, bytes, bool)) or value is None:
        return False
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return arr.ndim == 0 and arr in (0.0, 1.0) and not TRANSFORMS[transform].valid(arr)


def declare(
    owner: str,
    name: str,
    value: Any,
    default_transform: str,
    default_tune: bool,
    given: bool = True,
) -> Hyper:
    """Turn a float or a [`recursive_opt.hyper`][] declaration into a `Hyper`;
    `given`: the user gave `value` (not the optimiser's default)."""
    if isinstance(value, Hyper):
        return value
    declared = isinstance(value, HyperSpec)
    bounds = None
    if declared:
        spec = value
        transform = spec.transform or default_transform
        value, tune, per, bounds = spec.value, spec.tune, spec.per, spec.bounds
        if not tune and spec.transform is None and _at_edge(value, transform):
            # A fixed value is never moved, so its transform only stores it: one on
            # the edge of the default's range (Adam's b1 = 0) is stored as is.
            transform = "identity"
    else:
        transform, tune, per = default_transform, default_tune, "tree"
    _check_value(owner, name, value, transform)
    if bounds is not None and not isinstance(value, jax.core.Tracer):
        if np.any(outside(value, bounds)):
            raise ValueError(
                f"{owner}: hyperparameter `{name}` = {value!r} is outside its bounds "
                f"{bounds}. Start it within them."
            )
    # Raw values are strongly typed default floats (float32, or float64 with x64),
    # whatever the value's dtype: a weak type would turn strong after the first
    # update and make jit retrace, and 16-bit raw values are too coarse to tune.
    # The rules see them in the parameters' dtype, or float32 for 16-bit
    # parameters (`compute_dtype`).
    dtype = jnp.result_type(float)
    raw = TRANSFORMS[transform].inverse(jnp.asarray(value, dtype=dtype))
    return Hyper(raw, transform, tune, per, declared, bounds, given)


def is_zero(value: Any) -> bool:
    """Whether a float or declaration is concretely 0 (a switched-off term)."""
    if isinstance(value, HyperSpec):
        value = value.value
    if isinstance(value, (Hyper, jax.core.Tracer, str, bytes)) or value is None:
        return False
    try:
        return bool(np.ndim(value) == 0 and value == 0)
    except (TypeError, ValueError):
        return False


# Functions on optimiser modules: their hyperparameters are their `Hyper` fields.


def hyper_fields(opt: eqx.Module) -> dict[str, Hyper]:
    return {
        f.name: getattr(opt, f.name)
        for f in dataclasses.fields(opt)
        if isinstance(getattr(opt, f.name, None), Hyper)
    }


def tuned_raw(opt: eqx.Module) -> HyperParams:
    """The raw values of the tuned hyperparameters: what the level above optimises."""
    return {n: h.raw for n, h in hyper_fields(opt).items() if h.tune}


def with_raw(opt, raw: HyperParams):
    """`opt` with the raw values of (some of) its hyperparameters replaced."""
    names = list(raw)
    return eqx.tree_at(
        lambda o: [getattr(o, n).raw for n in names], opt, [raw[n] for n in names]
    )


# Tests set it to True or False to take one branch of `map_scalars` on any
# platform; None: stacked on a CPU, leaf by leaf elsewhere.
_STACKED: bool | None = None


def map_scalars(fn: Callable[..., Array], tree: PyTree, *rest: PyTree) -> PyTree:
    """`jax.tree.map(fn, tree, *rest)` for an elementwise `fn`; where the leaves
    are scalars (one value per layer or leaf of the model) and the program is
    compiled for a CPU, `fn` runs once on them stacked into vectors, one per
    dtype. The same arithmetic per value, in a program that does not grow with
    the model's arrays: traced per leaf, each value's few scalar operations
    become loops of their own for XLA:CPU to compile. A GPU's XLA fuses a
    value's scalar work into the kernels that read it, and there the stack and
    its split cost kernels of their own and keep the fused order's reduction
    out of the update's pass (`OneStep(fused=True)`: 8.6 P against 7.0 P for
    Adam, compiled for an H200), so elsewhere it is `jax.tree.map`, chosen when
    the program is lowered (`jax.lax.platform_dependent`)."""
    leaves, treedef = jax.tree.flatten(tree)
    args = [leaves, *(treedef.flatten_up_to(r) for r in rest)]
    traced = any(isinstance(x, jax.core.Tracer) for xs in args for x in xs)
    scalars = all(jnp.ndim(x) == 0 for xs in args for x in xs)

    # Run eagerly (as `Stack.init` runs), stacking would compile programs of
    # its own, one per number of values, and save none.
    def leafwise():
        return jax.tree.map(fn, tree, *rest)

    if len(leaves) < 2 or not (traced and scalars) or _STACKED is False:
        return leafwise()

    def stacked():
        kinds = [
            tuple(jnp.result_type(xs[i]) for xs in args) for i in range(len(leaves))
        ]
        out: list = [None] * len(leaves)
        for kind in dict.fromkeys(kinds):  # in order of first appearance
            at = [i for i, k in enumerate(kinds) if k == kind]
            if len(at) == 1:
                out[at[0]] = fn(*(xs[at[0]] for xs in args))
                continue
            values = fn(*(jnp.stack([xs[i] for i in at]) for xs in args))
            # Split (whose transpose is one concatenation), not indexed: each
            # index's transpose pads its value to the vector's length, and the
            # sum of those would cost a pass over the vector per value.
            for i, x in zip(at, jax.lax.split(values, [1] * len(at))):
                out[i] = x.reshape(())
        return jax.tree.unflatten(treedef, out)

    if _STACKED:
        return stacked()
    return jax.lax.platform_dependent(cpu=stacked, default=leafwise)


def _clip_raw(raw: Array, transform: str, bounds: Bounds) -> Array:
    # Compared as values; a violated bound's inverse is the new raw value, so the
    # optimiser reads exactly the bound.
    t, (lo, hi) = TRANSFORMS[transform], bounds
    value = t.forward(raw)
    if lo is not None:
        raw = jnp.where(value < lo, t.inverse(jnp.asarray(lo, raw.dtype)), raw)
    if hi is not None:
        raw = jnp.where(value > hi, t.inverse(jnp.asarray(hi, raw.dtype)), raw)
    return raw


def clip(opt):
    """`opt` with every bounded hyperparameter moved into its bounds."""
    fields = {n: h for n, h in hyper_fields(opt).items() if h.bounds is not None}
    if not fields:
        return opt
    names = list(fields)
    new = [
        map_scalars(
            lambda r, h=fields[n]: _clip_raw(r, h.transform, h.bounds), fields[n].raw
        )
        for n in names
    ]
    return eqx.tree_at(lambda o: [getattr(o, n).raw for n in names], opt, new)


def with_bounds(opt, bounds: dict[str, Bounds]):
    """`opt` with the named hyperparameters it has bounded (replacing their bounds)."""
    names = [n for n in bounds if n in hyper_fields(opt)]
    if not names:
        return opt
    return eqx.tree_at(
        lambda o: [getattr(o, n) for n in names],
        opt,
        [dataclasses.replace(getattr(opt, n), bounds=bounds[n]) for n in names],
    )


def values(opt: eqx.Module) -> dict[str, PyTree[Array]]:
    """The constrained values of every hyperparameter of `opt`."""
    return {n: h.value for n, h in hyper_fields(opt).items()}


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype hyperparameters take over a leaf of `dtype`: the leaf's own, but
    at least float32. In bfloat16, Adam's b2 = 0.999 rounds to 1 (its bias
    correction 1 - b2**t to 0) and a log learning rate moves in steps of 2-3 %,
    so 16-bit parameters get float32 hyperparameters, and the rules cast what
    they return back to the dtypes of the gradients and state they were given
    (`cast_like`)."""
    return jnp.promote_types(dtype, jnp.float32)


def cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """`tree`'s array leaves in the dtypes of the matching leaves of `like` (the
    same structure); a no-op where they already agree."""

    def cast(x, y):
        if hasattr(x, "dtype") and hasattr(y, "dtype") and x.dtype != y.dtype:
            return x.astype(y.dtype)
        return x

    return jax.tree.map(cast, tree, like)


def layer_groups(tree: PyTree[Array]) -> tuple[int, ...]:
    """The layer of each of `tree`'s leaves (in flattening order), numbered from
    0: leaves share a layer when one dict or module below the root holds them
    (a Flax NNX variable's trailing `.value` is not a level of its own), or one
    list or tuple that is an entry of a list or tuple (the `[(w, b), ...]` of
    JAX's tutorials and `jax.example_libraries.stax`, where a tuple is what a
    dict is elsewhere); a leaf directly under the root, or an entry of a list or
    tuple that a dict or module holds (`{"gains": [g1, g2]}`), is a layer alone."""
    ids: dict[Any, int] = {}
    groups = []
    for i, (path, _) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0]):
        path = tuple(path)
        if len(path) > 1 and path[-1] == jax.tree_util.GetAttrKey("value"):
            path = path[:-1]
        named = (jax.tree_util.DictKey, jax.tree_util.GetAttrKey)
        seq = jax.tree_util.SequenceKey
        shared = len(path) > 1 and (
            isinstance(path[-1], named)
            or (isinstance(path[-1], seq) and isinstance(path[-2], seq))
        )
        key = path[:-1] if shared else ("leaf", i)
        groups.append(ids.setdefault(key, len(ids)))
    return tuple(groups)


def value_groups(opt) -> tuple[int, ...] | None:
    """Which leaves of `tuned_raw(opt)` (in flattening order) are stored copies
    of one value: the leaves of one layer of a `per="layer"` hyperparameter share
    a number, every other leaf has its own; `None` when no two share one."""
    fields = hyper_fields(opt)
    ids: dict[Any, int] = {}
    out = []
    for name in sorted(n for n, h in fields.items() if h.tune):  # a dict's order
        h = fields[name]
        for i, _ in enumerate(jax.tree.leaves(h.raw)):
            key = (name, "layer", h.groups[i]) if h.groups else (name, i)
            out.append(ids.setdefault(key, len(ids)))
    return tuple(out) if len(ids) < len(out) else None


def _resolve_one(
    h: Hyper,
    target: PyTree[Array],
    groups: tuple[int, ...],
    copies: tuple[int, ...] | None = None,
) -> Hyper:
    if h.per == "tree":
        return h
    if h.per in ("leaf", "layer"):
        raw = jax.tree.map(lambda x: h.raw.astype(compute_dtype(x.dtype)), target)
    else:
        raw = jax.tree.map(
            lambda x: jnp.broadcast_to(h.raw.astype(compute_dtype(x.dtype)), x.shape),
            target,
        )
    if copies is not None:  # one value per value of the level below, per leaf
        return dataclasses.replace(h, raw=raw, groups=copies)
    return dataclasses.replace(h, raw=raw, groups=groups if h.per == "layer" else None)


def resolve(
    opt,
    target: PyTree[Array],
    groups: tuple[int, ...] | None = None,
    copies: tuple[int, ...] | None = None,
):
    """Expand `per="layer"`/`"leaf"`/`"element"` hyperparameters against the tree
    they act on; `groups`: the layer of each leaf of `target`, where `target`'s
    own structure does not tell (the list of a model's leaves), else
    `layer_groups(target)`. `copies` (`value_groups` of the level below, whose
    hyperparameters `target` is): leaves of `target` that are stored copies of
    one value (a `per="layer"` lr's layer) get one value between them, stepped by
    their summed hypergradient, whatever `per` says; else a layer's copies would
    be moved apart by values of their own."""
    fields = hyper_fields(opt)
    if all(h.per == "tree" for h in fields.values()):
        return opt
    if groups is None:
        groups = layer_groups(target)
    names = list(fields)
    new = [_resolve_one(fields[n], target, groups, copies) for n in names]
    return eqx.tree_at(lambda o: [getattr(o, n) for n in names], opt, new)


def per_layer(opt, hypergrads: HyperParams) -> HyperParams:
    """`hypergrads` of `opt`'s tuned hyperparameters with each `per="layer"` one's
    entries replaced by their layer's sum: the hypergradient of the one value the
    layer's leaves share, which the level above then moves them all by."""
    fields = hyper_fields(opt)
    out = dict(hypergrads)
    for name, g in hypergrads.items():
        groups = fields[name].groups
        if groups is None:
            continue
        leaves, treedef = jax.tree.flatten(g)
        dtype = jnp.result_type(*leaves)
        sums: dict[int, Array] = {}
        for k, leaf in zip(groups, leaves):
            sums[k] = sums[k] + leaf.astype(dtype) if k in sums else leaf.astype(dtype)
        out[name] = jax.tree.unflatten(
            treedef, [sums[k].astype(x.dtype) for k, x in zip(groups, leaves)]
        )
    return out


def broadcast(value: PyTree[Array], target: PyTree[Array]) -> PyTree[Array]:
    """Lay a hyperparameter's value over `target`, leaf for leaf, in the dtypes
    of `target`'s leaves (at least float32: `compute_dtype`).

    `value` is a scalar (`per="tree"`, or not yet resolved), a tree shaped like
    `target`, or a tree shaped like each entry of a dict `target` (a tied tower's
    hyperparameters updating themselves: the hyperparameters that belong to one
    leaf of the model update that leaf's hyperparameters).
    """
    v_def = jax.tree.structure(value)
    t_def = jax.tree.structure(target)
    if v_def == t_def:
        return jax.tree.map(
            lambda v, t: v.astype(compute_dtype(t.dtype)), value, target
        )
    if v_def.num_leaves == 1 and v_def == jax.tree.structure(0):
        return jax.tree.map(lambda t: value.astype(compute_dtype(t.dtype)), target)
    if isinstance(target, dict) and all(
        jax.tree.structure(t) == v_def for t in target.values()
    ):
        return {k: broadcast(value, t) for k, t in target.items()}
    raise ValueError(
        "A per-leaf or per-element hyperparameter was resolved against a tree of "
        f"structure {v_def} but is used on a tree of structure {t_def}. Initialise "
        "the optimiser (or tower) with the parameters it will update."
    )


def broadcast_values(opt, target: PyTree[Array]) -> dict[str, PyTree[Array]]:
    return {n: broadcast(v, target) for n, v in values(opt).items()}
