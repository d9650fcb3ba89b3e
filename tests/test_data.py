"""Data loaders: digits' fixed split, MNIST IDX/gzip/npz files, synthetic tasks."""

import gzip
import struct

import numpy as np
import pytest

import recursive_opt as ro


def test_digits_split_is_fixed_and_disjoint():
    a, b = ro.load_digits(), ro.load_digits()
    assert a.train[0].shape == (1437, 64) and a.test[0].shape == (360, 64)
    assert a.train[0].dtype == np.float32 and a.train[1].dtype == np.int32
    np.testing.assert_array_equal(a.test[0], b.test[0])
    assert 0 <= a.train[0].min() and a.train[0].max() <= 1
    rows = {r.tobytes() for r in a.train[0]}
    overlap = sum(r.tobytes() in rows for r in a.test[0])
    assert overlap < 10  # digits has a few duplicate images, not a shared split
    assert set(np.unique(a.train[1])) == set(range(10))


def write_idx(path, array, gz=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = {
        s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for s, n in (("train", 7), ("t10k", 3))
    }
    labels = {s: rng.integers(0, 10, len(images[s]), dtype=np.uint8) for s in images}
    suffix = ".gz" if gz else ""
    for s in images:
        write_idx(tmp_path / f"{s}-images-idx3-ubyte{suffix}", images[s], gz)
        write_idx(tmp_path / f"{s}-labels-idx1-ubyte{suffix}", labels[s], gz)
    ds = ro.load_mnist(tmp_path)
    assert ds.train[0].shape == (7, 784) and ds.test[0].shape == (3, 784)
    np.testing.assert_allclose(
        ds.train[0][2], images["train"][2].ravel() / 255.0, rtol=1e-6
    )
    np.testing.assert_array_equal(ds.test[1], labels["t10k"])
    assert ro.load_mnist(tmp_path, flatten=False).train[0].shape == (7, 28, 28)
    np.testing.assert_array_equal(
        ro.read_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}"), labels["t10k"]
    )


def test_idx_float_data_and_errors(tmp_path):
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    write_idx(tmp_path / "x.idx", x)
    np.testing.assert_array_equal(ro.read_idx(tmp_path / "x.idx"), x)
    raw = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "cut.idx").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ro.read_idx(tmp_path / "cut.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        ro.read_idx(tmp_path / "bad.idx")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        ro.load_mnist(tmp_path)


def test_mnist_npz(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_train": np.arange(5),
        "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "y_test": np.arange(2),
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    ds = ro.load_mnist(tmp_path / "mnist.npz")
    assert ds.train[0].shape == (5, 784) and ds.train[0].max() <= 1
    np.testing.assert_array_equal(ds.test[1], [0, 1])
    del arrays["y_test"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match=r"lacks arrays \['y_test'\]"):
        ro.load_mnist(tmp_path / "partial.npz")
    with pytest.raises(FileNotFoundError, match="neither a directory"):
        ro.load_mnist(tmp_path / "missing.npz")


def test_quadratic_has_the_requested_conditioning():
    ds = ro.make_quadratic(dim=8, n=20000, condition=50.0, noise=0.0, seed=2)
    x, y = ds.train
    eig = np.linalg.eigvalsh(x.T.astype(np.float64) @ x / len(x))
    assert eig.max() / eig.min() == pytest.approx(50.0, rel=0.1)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(x @ w, y, atol=1e-3)  # noiseless: exactly linear


def test_gaussian_mixture_is_learnable_but_not_trivial():
    ds = ro.make_gaussian_mixture(dim=16, classes=4, n=4000, separation=3.0, seed=0)
    x, y = ds.train
    assert x.shape == (4000, 16) and set(np.unique(y)) == {0, 1, 2, 3}
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    xt, yt = ds.test
    pred = np.argmin(((xt[:, None] - means) ** 2).sum(-1), axis=1)
    assert 0.5 < np.mean(pred == yt) < 1.0
