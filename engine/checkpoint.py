"""The resumable checkpoint (``last.pt``) and the RNG state it carries.

Darknet ``.weights`` hold the network only; resuming also needs the optimizer (momentum
buffers), the LR schedule position, the EMA copy, the epoch, the best metric so far, the
results history, every RNG state and each hook's state. All of it goes into one
``torch.save`` file written atomically, so a run killed while saving keeps the previous one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import UserError
from common.io import atomic_open

CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as f:
        torch.save({"version": CHECKPOINT_VERSION, **state}, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"{path}: not a readable training checkpoint ({type(e).__name__})") from e
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path}: not a training checkpoint of this version")
    return state
