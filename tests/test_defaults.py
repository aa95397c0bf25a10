"""One home per default: the yaml in conf/. A key a yaml sets has no default in its
``_target_``'s signature (neither a repeat nor a contradiction), and every parameter is a key
of the yaml (unless the code passes it at build time), so none has a default the yaml hides."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import CONF
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from ddpm.configs.run_config import GROUPS, HYDRA_KEYS, PASSED_AT_BUILD, config_parameters

# (yaml file, key) -> why the signature keeps that default anyway. Empty: no exceptions.
DELIBERATE: dict[tuple[str, str], str] = {}

Node = tuple[str, str, str, DictConfig]  # (yaml file, where in it, group, the node)


def group_options() -> list[tuple[str, str]]:
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def composed_nodes() -> Iterator[Node]:
    """Each group option as Hydra composes it (its own defaults list followed)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for group, option in group_options():
            cfg = compose(overrides=[f"+{group}={option}"])
            yield f"conf/{group}/{option}.yaml", group, group, cfg[group]
    GlobalHydra.instance().clear()


def _targets(node: Any, where: str) -> Iterator[tuple[str, DictConfig]]:
    """Every dict with a ``ddpm.`` target in a yaml, nested ones included."""
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        if isinstance(target, str) and target.startswith("ddpm."):
            yield where, node
        for key in node:
            if key != "defaults":
                yield from _targets(node._get_node(key), f"{where}.{key}".lstrip("."))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from _targets(item, f"{where}[{i}]")


def other_nodes() -> Iterator[Node]:
    """``ddpm.`` targets in every other yaml (commands' configs, hydra/, shared fragments)."""
    options = {CONF / group / f"{option}.yaml" for group, option in group_options()}
    for path in sorted(CONF.rglob("*.yaml")):
        if path in options:
            continue
        for where, node in _targets(OmegaConf.load(path), ""):
            yield str(path.relative_to(CONF.parent)), where or "(top)", "", node


ALL = [*composed_nodes(), *other_nodes()]


def problems(
    file: str,
    group: str,
    node: DictConfig,
    used: set[tuple[str, str]],
    target: Callable[..., Any] | None = None,
) -> list[str]:
    """What is wrong with ``node`` (from ``file``); adds the DELIBERATE entries used to ``used``."""
    params = config_parameters(target or get_object(node._target_))
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    at_build = PASSED_AT_BUILD.get(group, set())
    keys = {str(key) for key in node}  # with ??? ones, which `in node` does not see
    found = []

    def excused(key: str) -> bool:
        if (file, key) in DELIBERATE:
            used.add((file, key))
            return True
        return False

    for key in node:
        if key in HYDRA_KEYS:
            continue
        param = params.get(str(key))
        if param is None:
            if not open_ended:
                found.append(f"{key}: not a parameter of {node._target_}")
        elif param.default is not param.empty and not excused(str(key)):
            value = OmegaConf.to_container(node, resolve=False)[key]
            kind = "repeats" if value == param.default else "contradicts"
            found.append(f"{key}: the yaml's {value!r} {kind} the default {param.default!r}")
    for name, param in params.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in at_build:
            continue
        if name in keys or excused(name):
            continue
        if param.default is param.empty:
            found.append(f"{name}: no default in {node._target_} and not a key of the yaml")
        else:
            found.append(f"{name}: a default ({param.default!r}) the yaml does not show")
    return found


@pytest.mark.parametrize(
    ("file", "where", "group", "node"), ALL, ids=[f"{f}:{w}" for f, w, *_ in ALL]
)
def test_the_yaml_is_the_one_home_of_each_default(file, where, group, node):
    assert problems(file, group, node, set()) == []


def test_every_group_option_and_nested_target_is_checked():
    files = {file for file, *_ in ALL}
    assert {f"conf/{g}/{o}.yaml" for g, o in group_options()} <= files
    assert "conf/config.yaml" in files  # hydra.callbacks: ddpm.frontend.callbacks.ReportFailures
    assert len(group_options()) >= 30


def test_each_deliberate_exception_is_still_needed():
    used: set[tuple[str, str]] = set()
    for file, _, group, node in ALL:
        problems(file, group, node, used)
    assert set(DELIBERATE) - used == set()


def test_the_check_fails_on_a_repeat_a_contradiction_and_a_missing_key():
    node = OmegaConf.create({"_target_": "example", "a": 1, "b": 5, "typo": 0})
    found = problems("x.yaml", "", node, set(), target=example)
    assert found == [
        "a: the yaml's 1 repeats the default 1",
        "b: the yaml's 5 contradicts the default 2",
        "typo: not a parameter of example",
        "c: no default in example and not a key of the yaml",
        "d: a default (0) the yaml does not show",
    ]
    good = OmegaConf.create({"a": 1, "b": 2, "c": 3, "d": 4})
    assert problems("x.yaml", "", good, set(), target=lambda a, b, *, c, d: None) == []
    used: set[tuple[str, str]] = set()
    DELIBERATE[("x.yaml", "d")] = "an example"
    try:
        assert "d: a default (0) the yaml does not show" not in problems(
            "x.yaml", "", node, used, target=example
        )
    finally:
        del DELIBERATE[("x.yaml", "d")]
    assert used == {("x.yaml", "d")}


def example(a: int = 1, b: int = 2, *, c: int, d: int = 0) -> None:
    """For the test above."""


def test_the_res_presets_share_one_base():
    for option in ("res_tiny", "res_small", "res_base", "res_large"):
        text = (CONF / "model" / f"{option}.yaml").read_text()
        assert "/model_base/resunet@_here_" in text and "_target_" not in text
