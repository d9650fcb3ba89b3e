"""Data sets for `fit`, `sweep`, the CLI, tests and benchmarks.

Every loader returns a `Dataset`: `train` and `test`, each a tuple `(x, y)` of
NumPy arrays whose first axis indexes examples, so it can be passed to
`ro.fit(..., data=ds.train, eval_data=ds.test)` as it is.
"""

import gzip
import os
import struct
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """A train/test split: each of `train` and `test` is a tuple `(x, y)`."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def _split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return Dataset((x[train], y[train]), (x[test], y[test]))


def load_digits(n_test: int = 360, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 10 classes), which ship with it.

    **Arguments:**

    - `n_test`: the size of the test split (the rest is for training).
    - `seed`: the seed of the fixed permutation that makes the split.

    **Returns:** a `Dataset` whose `x` are float32 arrays of shape `(n, 64)` in
    [0, 1] and whose `y` are int32 labels. The default split (1437 / 360) is the
    same on every machine.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'recursive_opt[demo]'."
        ) from e
    data = sk_load_digits()
    x = (data.data / 16.0).astype(np.float32)
    return _split(x, data.target.astype(np.int32), n_test, seed)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}
_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped if its name ends in `.gz`."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(
            f"{path}: the header says shape {shape} of {dtype}, which needs "
            f"{int(np.prod(shape)) * dtype.itemsize} bytes, but the file holds "
            f"{len(body)}; it is truncated or corrupt."
        )
    return np.frombuffer(body, dtype).reshape(shape)


def _find(directory: str, stem: str) -> str:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise FileNotFoundError(
        f"No {stem}[.gz] in {directory}; an MNIST directory holds the four IDX "
        f"files {', '.join(_MNIST_FILES.values())} (optionally gzipped)."
    )


def load_mnist(path: str | os.PathLike, flatten: bool = True) -> Dataset:
    """MNIST (or any data set in its format) from a local path; nothing is downloaded.

    **Arguments:**

    - `path`: a directory holding the four IDX files (`train-images-idx3-ubyte`,
        `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
        `t10k-labels-idx1-ubyte`, each optionally gzipped), or an `.npz` file
        with arrays `x_train`, `y_train`, `x_test`, `y_test` (Keras's layout).
    - `flatten`: reshape each image to a vector.

    **Returns:** a `Dataset` with float32 images scaled to [0, 1] (integer pixels
    are divided by 255) and int32 labels.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        arrays = {k: read_idx(_find(path, stem)) for k, stem in _MNIST_FILES.items()}
    elif path.endswith(".npz") and os.path.isfile(path):
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _MNIST_FILES if k not in f.files]
            if missing:
                raise ValueError(
                    f"{path} lacks arrays {missing}; it needs x_train, y_train, "
                    f"x_test and y_test (it has {f.files})."
                )
            arrays = {k: f[k] for k in _MNIST_FILES}
    else:
        raise FileNotFoundError(
            f"{path} is neither a directory of MNIST IDX files nor an .npz file."
        )

    def images(x):
        scale = 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
        x = x.astype(np.float32) / scale
        return x.reshape(len(x), -1) if flatten else x

    for part in ("train", "test"):
        if len(arrays[f"x_{part}"]) != len(arrays[f"y_{part}"]):
            raise ValueError(
                f"{path}: {len(arrays[f'x_{part}'])} {part} images but "
                f"{len(arrays[f'y_{part}'])} labels."
            )
    return Dataset(
        (images(arrays["x_train"]), arrays["y_train"].astype(np.int32)),
        (images(arrays["x_test"]), arrays["y_test"].astype(np.int32)),
    )


def make_quadratic(
    dim: int = 10,
    n: int = 1024,
    condition: float = 100.0,
    noise: float = 0.1,
    n_test: int = 256,
    seed: int = 0,
) -> Dataset:
    """Least squares with a chosen conditioning: a quadratic loss in the weights.

    Inputs are Gaussian with covariance eigenvalues spread log-uniformly over
    `[1 / condition, 1]`; targets are `x @ w_true + noise * N(0, 1)`. The mean
    squared error of a linear model is then a quadratic whose Hessian has condition
    number about `condition`. `y` has shape `(n,)`, float32.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scales = np.sqrt(np.logspace(0.0, -np.log10(condition), dim))
    total = n + n_test
    x = rng.normal(size=(total, dim)) * scales @ q.T
    w_true = rng.normal(size=dim)
    y = x @ w_true + noise * rng.normal(size=total)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Dataset((x[:n], y[:n]), (x[n:], y[n:]))


def make_gaussian_mixture(
    dim: int = 16,
    classes: int = 4,
    n: int = 2048,
    separation: float = 2.0,
    n_test: int = 512,
    seed: int = 0,
) -> Dataset:
    """Classification of points drawn from `classes` unit Gaussians in `dim` dims.

    Class means are Gaussian with standard deviation `separation / sqrt(dim)` per
    coordinate, so their distance is about `separation * sqrt(2)` and the Bayes
    accuracy is well below 1 for small separations. `x` is float32, `y` int32.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim)) * separation / np.sqrt(dim)
    total = n + n_test
    y = rng.integers(0, classes, size=total).astype(np.int32)
    x = (means[y] + rng.normal(size=(total, dim))).astype(np.float32)
    return Dataset((x[:n], y[:n]), (x[n:], y[n:]))
