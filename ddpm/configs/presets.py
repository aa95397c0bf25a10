"""Each default's one home, the yaml: what ``conf/<group>/<option>.yaml`` builds.

Signatures hold no default for a key a yaml sets (tests/test_defaults.py checks every file in
``conf/``), so code that builds a part without a whole run config (library code, tests) asks
for a preset: :func:`preset`. The lowest layer of the config: it imports no other part of the
package but the errors.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ddpm.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate``, but a UserError raised inside stays a UserError (one clean line)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


@functools.cache
def _preset_config(group: str, option: str) -> DictConfig:
    """``conf/<group>/<option>.yaml`` as Hydra composes it (its defaults list followed), next
    to the default dataset its interpolations read (``${dataset.channels}``); unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"+{group}={option}"] + ([] if group == "dataset" else ["+dataset=mnist"])
    outer = GlobalHydra.instance().hydra  # a running command's (ddpm.bench): set aside
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(overrides=overrides)
    finally:
        GlobalHydra.instance().hydra = outer
    OmegaConf.set_readonly(cfg, True)
    return cfg


def preset(group: str, option: str, **overrides: Any) -> Any:
    """What ``conf/<group>/<option>.yaml`` builds, with ``overrides``: keys of the yaml
    (``steps=20``) and build-time arguments (``schedule=``), e.g.
    ``preset("sampler", "ddim", schedule=sch, eta=1.0)``. A model's ``${dataset.*}`` keys
    follow conf/dataset/mnist.yaml unless overridden."""
    return build(_preset_config(group, option)[group], **overrides)
