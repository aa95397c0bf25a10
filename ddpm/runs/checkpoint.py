"""Atomic checkpoint files: write to a temp file in the same folder, then rename.

A crash mid-write leaves the previous file intact. Files hold only tensors and plain Python
values, so they load with ``weights_only=True`` and can never run code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpm.errors import UserError, require

RUN_ID = "tracker_run_id"  # the experiment tracker's id of the run (W&B's), to resume it


def run_id(state: dict[str, Any]) -> str | None:
    """The tracker's run id a checkpoint holds (written as ``wandb_run_id`` before trackers
    other than W&B could hold one)."""
    return state.get(RUN_ID, state.get("wandb_run_id"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(
            f"checkpoint {str(path)!r} is not a readable ddpm checkpoint "
            f"({type(err).__name__}: {detail})"
        ) from None


# --- what resume needs ---------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every random stream training draws from, as tensors and plain values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gauss": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        # The current device's stream: under torchrun every rank's is the same, and each rank
        # restores it into its own device (another rank's view of cuda:r never advanced).
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gauss"],
        )
    )
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        if isinstance(state["cuda"], list):  # older checkpoints: every device's stream
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            torch.cuda.set_rng_state(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple | list) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def resume_path(resume: str | None, run_dir: Path) -> Path | None:
    """``trainer.resume``: ``auto`` = the run dir's own last.pt if present; a path = that file;
    null/``never`` = start fresh."""
    if resume in (None, "never", False):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(str(resume)).expanduser()
    require(path.is_file(), "trainer.resume", str(resume), "no such checkpoint file")
    return path


def load_weights(module: torch.nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """``load_state_dict`` that names the file when the shapes or keys do not fit."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(
            f"checkpoint {str(path)!r} does not fit this model (another architecture?): {first}"
        ) from None
