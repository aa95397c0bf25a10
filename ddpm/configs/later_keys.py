"""Config keys added after runs were already saved, each with the value that reproduces what
those runs did.

A stored config that lacks one is read as if it held that value: its network and process
rebuild as they trained (:func:`completed`), and a job that sets exactly that value may resume
it (:mod:`ddpm.runs.same_run`). The value is the old behaviour, not the key's current default,
which a recipe may change later while an old run's behaviour stays what it was.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

LATER_KEYS: dict[str, Any] = {
    "model.interval_input": False,  # process=meanflow's second time input
    "process.pairing": "independent",  # flow matching's OT pairing
    "trainer.lr_schedule": "constant",
    "trainer.lr_warmup_steps": 0,
    "trainer.lr_ref_steps": 1000,
}


def completed(group: str, node: DictConfig) -> DictConfig:
    """A stored ``group`` node (``model``, ``process``) plus the later keys of that group
    which its target takes and the node lacks."""
    params = inspect.signature(get_object(node._target_)).parameters
    missing = {}
    for dotted, value in LATER_KEYS.items():
        prefix, _, key = dotted.partition(".")
        if prefix == group and key in params and key not in node:
            missing[key] = value
    return OmegaConf.merge(node, missing) if missing else node
