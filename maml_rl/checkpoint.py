"""Checkpoints: written atomically, loaded safely (``torch.load(weights_only=True)``) and checked
against the config they are used with; every failure is one line naming the file.

:func:`restore` is the one place where a checkpoint is read into a learner (``train.py
--resume`` and ``evaluate.py``); :func:`save_checkpoint` the one place where one is written.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from maml_rl.config import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"

# What train.py's checkpoints hold (Trainer.state); anything else was not written by it.
_REQUIRED_KEYS = ("iteration", "learner", "rng", "config")

# Config keys that fix what a checkpoint's parameters mean besides the task family (env.id):
# the network. Other keys (learning rates, sampling sizes, evaluation settings...) may change
# on resume.
_MODEL_KEYS = (
    "policy.model",
    "policy.hidden_sizes",
    "policy.nonlinearity",
    "policy.batch_norm",
    "policy.conv_filters",
    "policy.conv_downsample",
)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read, or does not fit the config; one line naming the file
    (a ConfigError, so the CLIs print it as ``error: ...`` with exit status 2)."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (e.g. a full disk); the previous checkpoint is untouched.
    The message is one line naming the file, the reason and the state of the previous one."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a crash or a full disk mid-write leaves the
    previous file intact (and no temporary file behind). Raises :class:`CheckpointWriteError`
    when the file cannot be written."""
    path = Path(path)
    # Serialise in memory first: a failing write() inside torch.save surfaces as an opaque
    # RuntimeError ("unexpected pos ..."), whereas our own write() raises OSError(ENOSPC).
    buffer = io.BytesIO()
    torch.save(state, buffer)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the checkpoint the permissions of the run's other files.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = err.strerror or str(err)
        code = f" ({errno.errorcode[err.errno]})" if err.errno in errno.errorcode else ""
        failure = CheckpointWriteError(
            f"cannot write checkpoint '{path}': {reason}{code}; {_previous(path)}"
        )
        failure.errno = err.errno  # one-argument form: str() is the message alone
        raise failure from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _previous(path: Path) -> str:
    """What a failed write left at ``path``: checked by loading it, not assumed."""
    if not path.exists():
        return "no earlier checkpoint had been written"
    try:
        iteration = load_checkpoint(path)["iteration"]
    except CheckpointError:
        return "the earlier checkpoint there is unreadable too"
    return f"the previous checkpoint there (iteration {iteration}) is intact"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing pickled code. A missing file raises
    FileNotFoundError; an unreadable one, or one that train.py did not write,
    :class:`CheckpointError` saying which and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    advice = "use an intact checkpoint (e.g. from a backup) or start a new run"
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        if zip_start:  # begins as an archive but lacks its end: cut short
            raise CheckpointError(f"checkpoint '{path}' is truncated ({path.stat().st_size} "
                                  f"bytes; an interrupted write or copy); {advice}")
        raise CheckpointError(f"checkpoint '{path}' is not a checkpoint written by train.py "
                              f"(not a PyTorch archive); give the {CHECKPOINT_NAME} of a run")
    try:
        with warnings.catch_warnings():
            # A damaged archive can make torch warn (e.g. about the pickle protocol) before
            # failing; the error below says all there is to say, on one line.
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        # Damaged bytes fail anywhere in torch's reader, as any of a dozen exception types.
        # torch's own text suggests an unsafe load; ours never does.
        raise CheckpointError(f"checkpoint '{path}' is damaged and cannot be read safely "
                              f"({type(err).__name__}); {advice}") from None
    missing = [k for k in _REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not isinstance(state["learner"], dict) or "model" not in state["learner"]:
        what = f"it lacks {', '.join(missing)}" if missing else "its learner state is malformed"
        raise CheckpointError(f"checkpoint '{path}' was not written by train.py ({what}); "
                              f"give the {CHECKPOINT_NAME} of a run")
    return state


def _get(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _shape_mismatches(saved: dict[str, Any], current: dict[str, torch.Tensor]) -> list[str]:
    """``name [checkpoint shape] vs [config shape]`` for every parameter that differs."""
    out = []
    for name in dict.fromkeys([*current, *saved]):
        a, b = saved.get(name), current.get(name)
        shape_a = list(a.shape) if isinstance(a, torch.Tensor) else "absent"
        shape_b = list(b.shape) if isinstance(b, torch.Tensor) else "absent"
        if shape_a != shape_b:
            out.append(f"{name} {shape_a} vs {shape_b}")
    return out


def restore(learner: Any, path: str | Path, config: Any,
            map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``learner`` (built from ``config``) and return
    its state. Raises :class:`CheckpointError` (one line) when the file cannot be read or was
    written for another config: another task family or network (both env ids, the keys that
    differ and the parameter shapes that differ)."""
    path = Path(path)
    state = load_checkpoint(path, map_location=map_location)
    saved_config = state["config"] if isinstance(state["config"], dict) else {}
    ours = config.to_dict()
    saved_env = _get(saved_config, "env.id")
    differ = [f"{key} {_get(saved_config, key)!r} vs {_get(ours, key)!r}"
              for key in _MODEL_KEYS if _get(saved_config, key) != _get(ours, key)]
    model = state["learner"]["model"]
    differ += _shape_mismatches(model if isinstance(model, dict) else {},
                                learner.model.state_dict())
    if differ:
        problem = "checkpoint vs config: " + "; ".join(differ[:4])
        problem += f"; and {len(differ) - 4} more" if len(differ) > 4 else ""
    elif saved_env != config.env.id:
        problem = "another task family"
    else:
        try:
            learner.load_state_dict(state["learner"])
            return state
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            # E.g. another algorithm's state (Meta-SGD's rates) or sampler sizes.
            text = str(err).strip().splitlines()
            problem = f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
    raise CheckpointError(
        f"checkpoint '{path}' (env.id '{saved_env}') does not fit this config (env.id "
        f"'{config.env.id}'): {problem}; use it with the config it was trained with, or start "
        "a new run for this one"
    )
