"""Checkpoints of a `fit` run: one file per checkpoint, written atomically.

A checkpoint is an `.npz` archive (zip, with CRC checks) holding

- `meta`: JSON with the step, the run's fingerprint and the SHA-256 of `carry`;
- `carry`: the training carry (parameters, optimiser or tower state, PRNG key,
    step and guard counters) serialised with `equinox.tree_serialise_leaves`;
- `history/<key>`: the history recorded so far.

It is written to a temporary file in the same directory, flushed to disk and
renamed over its final name, so a run killed at any moment leaves either the old
checkpoint or the new one, never half of one. The two newest are kept.
"""

import glob
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree

from ._model import data_to_keys, keys_to_data

_NAME = "ckpt-{:010d}.npz"
_PATTERN = re.compile(r"ckpt-(\d{10})\.npz$")
_KEEP = 2


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, unreadable, or from a different run."""


def fingerprint(carry: PyTree, config: dict[str, Any]) -> dict[str, Any]:
    """What must agree between a checkpoint and the run resuming from it.

    The carry's structure and leaf shapes/dtypes, the run's configuration, and a
    hash of the initial carry's values (so a changed initial learning rate or seed
    is caught too).
    """
    leaves, treedef = jax.tree.flatten(keys_to_data(carry))
    digest = hashlib.sha256()
    for x in leaves:
        digest.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    return {
        "structure": str(treedef),
        "leaves": [f"{x.dtype}{list(x.shape)}" for x in leaves],
        "config": json.loads(json.dumps(config)),
        "initial": digest.hexdigest(),
    }


def _serialise(carry: PyTree) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, keys_to_data(carry))
    return buf.getvalue()


def save(directory: str, step: int, carry, history: dict, fprint: dict) -> str:
    """Write checkpoint `step` atomically; returns its path."""
    os.makedirs(directory, exist_ok=True)
    blob = _serialise(carry)
    meta = {
        "format": 1,
        "step": step,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "fingerprint": fprint,
    }
    arrays = {f"history/{k}": np.asarray(v) for k, v in history.items()}
    arrays["meta"] = np.array(json.dumps(meta))
    arrays["carry"] = np.frombuffer(blob, np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        path = os.path.join(directory, _NAME.format(step))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    for old in list_checkpoints(directory)[:-_KEEP]:
        os.remove(old[1])
    return path


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """`(step, path)` of the complete checkpoints in `directory`, oldest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.npz")):
        match = _PATTERN.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def load_latest(directory: str, like: PyTree, fprint: dict):
    """`(step, carry, history)` from the newest checkpoint, or None if there is none.

    Raises `CheckpointError` if it is corrupt or was written by a different run.
    """
    found = list_checkpoints(directory) if os.path.isdir(directory) else []
    if not found:
        return None
    step, path = found[-1]
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            blob = f["carry"].tobytes()
            history = {
                k[len("history/") :]: f[k] for k in f.files if k.startswith("history/")
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(
            f"Checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}). "
            "Delete it to resume from the one before, or delete the directory to "
            "start afresh."
        ) from e
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"Checkpoint {path} is corrupt: its contents do not match their "
            "checksum. Delete it to resume from the one before, or delete the "
            "directory to start afresh."
        )
    mismatch = _compare(meta.get("fingerprint", {}), fprint)
    if mismatch:
        raise CheckpointError(
            f"Checkpoint {path} was written by a different run: {mismatch}. "
            "Resume with the same model, optimiser, data and options, or use a "
            "new checkpoint_dir."
        )
    carry = eqx.tree_deserialise_leaves(io.BytesIO(blob), keys_to_data(like))
    return step, data_to_keys(carry, like), history


def _compare(saved: dict, current: dict) -> str:
    problems = []
    if (
        saved.get("structure") != current["structure"]
        or saved.get("leaves") != current["leaves"]
    ):
        problems.append("the model's or optimiser state's structure differs")
    saved_config = saved.get("config", {})
    for k in sorted(set(saved_config) | set(current["config"])):
        if saved_config.get(k) != current["config"].get(k):
            problems.append(
                f"{k} was {saved_config.get(k)!r}, now {current['config'].get(k)!r}"
            )
    if not problems and saved.get("initial") != current["initial"]:
        problems.append("the initial parameters, hyperparameters or PRNG key differ")
    return "; ".join(problems)
