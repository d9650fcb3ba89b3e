"""Property tests over random parameter trees, depths and per= choices."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import example, given, settings, strategies as st

import recursive_opt as ro
from recursive_opt._hyper import layer_groups

from .helpers import BY_NAME, CATALOGUE, copies

shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
trees = st.recursive(
    shapes,
    lambda children: st.one_of(
        st.dictionaries(st.sampled_from("abcd"), children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=2).map(tuple),
    ),
    max_leaves=5,
)
pers = st.sampled_from(["tree", "layer", "leaf", "element"])


def _make_params(shape_tree, seed):
    leaves, treedef = jax.tree.flatten(
        shape_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x),
    )
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [jnp.asarray(rng.normal(size=s)) for s in leaves]
    )


@settings(max_examples=12, deadline=None)
@given(
    shape_tree=trees,
    depth=st.integers(1, 4),
    per=pers,
    tie=st.booleans(),
    entry=st.sampled_from(CATALOGUE),
    seed=st.integers(0, 2**16),
)
# Always tried: layers of a dict and of a tuple in a tuple beside a lone array.
@example(
    shape_tree={"a": {"c": (2,), "d": (3,)}, "b": ((2,), ((1,), (2, 2)))},
    depth=3,
    per="layer",
    tie=False,
    entry=BY_NAME["adam"],
    seed=0,
)
def test_towers_on_random_trees(shape_tree, depth, per, tie, entry, seed):
    params = _make_params(shape_tree, seed)
    tower = copies(depth, entry.make(per), tie)
    state0 = state = tower.init(params)
    for i in range(3):
        grads = jax.tree.map(lambda p: jnp.sin(p + i) + 0.1, params)
        updates, state = tower.update(grads, state, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
        params = ro.apply_updates(params, updates)
    assert jax.tree.structure(state) == jax.tree.structure(state0)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
    chex.assert_tree_all_finite((params, state))
    hp = ro.hyperparams(state)
    assert len(hp) == depth
    lr = hp[0]["lr"]
    if per == "tree":
        assert jnp.shape(lr) == ()
    elif per in ("layer", "leaf"):
        assert jax.tree.structure(lr) == jax.tree.structure(params)
        assert all(jnp.shape(v) == () for v in jax.tree.leaves(lr))
        if per == "layer":  # a layer's leaves share one value, bit for bit
            values = {}
            groups = layer_groups(params)
            for k, v in zip(groups, jax.tree.leaves(lr)):
                assert values.setdefault(k, v) == v
            if len(set(groups)) > 1 and depth > 1:  # and the layers' values part
                assert len(set(float(v) for v in values.values())) > 1
    else:
        chex.assert_trees_all_equal_shapes(lr, params)
