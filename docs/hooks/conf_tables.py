"""MkDocs hook: tables generated from ``conf/``, so the docs cannot drift from the configs.

A page asks for a table with an HTML comment on a line of its own (invisible where the
markdown is read raw):

- ``<!-- conf-groups -->``: every config group, its options, and the default each group gets
  from ``conf/config.yaml`` (the defaults list, then the default recipe's overrides).
- ``<!-- conf-table: GROUP -->``: one row per option in ``conf/GROUP/*.yaml``: whether it is the
  default, its ``_target_``, and its keys with their values (nested keys dotted; an option that
  extends a sibling, such as ``model/small`` extending ``base``, shows the merged keys).
- ``<!-- conf-keys: FILE -->``: one row per key of ``conf/FILE.yaml`` (``trainer/default``,
  ``evaluate``, ...): the key, its value and the comment on its line. The comments are read
  line by line, since YAML loaders drop them.

An unknown group or file raises, so renaming one breaks ``mkdocs build`` instead of leaving a
stale page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

CONF = Path(__file__).resolve().parents[2] / "conf"
# A marker on a line of its own (one quoted inside a sentence or code span is left alone).
MARKER = re.compile(
    r"^[ \t]*<!--\s*conf-(groups|table|keys)\s*(?::\s*([\w/.-]+))?\s*-->[ \t]*$", re.MULTILINE
)
SKIPPED = {"_target_", "_partial_", "defaults", "hydra"}
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<rest>.*)$")
DEFAULTS_LINE = re.compile(
    r"^ *- +(?:override +)?(?P<group>[\w/@]+): *(?P<option>[\w.]+)(?P<rest>.*)$"
)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replaces every marker on the page with its table."""

    def render(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "groups":
            return groups_table()
        if not name:
            raise PluginError(f"{page.file.src_path}: conf-{kind} needs a name: {match.group(0)}")
        return option_table(name) if kind == "table" else keys_table(name)

    markdown = MARKER.sub(render, markdown)
    stray = re.search(r"^[ \t]*<!--\s*conf-.*$", markdown, re.MULTILINE)
    if stray:
        raise PluginError(f"{page.file.src_path}: unknown conf marker {stray.group(0).strip()}")
    return markdown


# Reading conf/


def load(path: Path) -> dict[str, Any]:
    """A yaml file as a dict, or a build error naming the missing file."""
    if not path.is_file():
        raise PluginError(f"conf table: no such config file {path}")
    return yaml.safe_load(path.read_text()) or {}


def group_dir(group: str) -> Path:
    folder = CONF / group
    if not folder.is_dir() or not any(folder.glob("*.yaml")):
        raise PluginError(f"conf table: no config group conf/{group}/ with yaml options")
    return folder


def defaults_of(node: dict[str, Any]) -> dict[str, str]:
    """``group -> option`` for the dict entries of a defaults list (``override`` stripped)."""
    choices: dict[str, str] = {}
    for entry in node.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                choices[key.removeprefix("override ").lstrip("/")] = str(value)
    return choices


def default_choices() -> tuple[dict[str, str], dict[str, str], str]:
    """(the defaults list's choices, what the default recipe overrides, that recipe's name)."""
    listed = defaults_of(load(CONF / "config.yaml"))
    recipe = listed.get("recipe", "")
    overridden = defaults_of(load(CONF / "recipe" / f"{recipe}.yaml")) if recipe else {}
    return listed, overridden, recipe


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys as dotted paths, Hydra's own keys left out."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if key in SKIPPED and not prefix:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def option(path: Path) -> tuple[dict[str, Any], list[str]]:
    """An option's yaml merged over the files it includes, and what it includes or picks.

    Includes are the plain entries of its defaults list: a sibling (``- base``) or a path from
    ``conf/`` (``- /model_base/resunet@_here_``); ``override`` entries are the options it picks.
    """
    node = load(path)
    merged: dict[str, Any] = {}
    notes: list[str] = []
    for entry in node.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            name = entry.split("@")[0]
            included = CONF / f"{name[1:]}.yaml" if name.startswith("/") else path.parent / name
            included = included.with_suffix(".yaml")
            if included.is_file():
                merged.update(option(included)[0])
            notes.append(f"extends `{name}`")
    notes += [f"`{group}={choice}`" for group, choice in defaults_of(node).items()]
    merged.update(node)
    return merged, notes


def included_folders() -> set[str]:
    """Folders of ``conf/`` that hold shared parts other files include (``- /folder/name``),
    not options to pick."""
    folders: set[str] = set()
    for path in CONF.rglob("*.yaml"):
        for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
            if isinstance(entry, str) and entry.startswith("/"):
                folders.add(entry[1:].split("/")[0])
    return folders


# Formatting


def fmt(value: Any) -> str:
    """A value as YAML would spell it, in one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return "required" if value == "???" else str(value)


def code(text: str) -> str:
    """A code span (the tables extension keeps a pipe inside one within its cell)."""
    return f"`{text}`"


def prose(text: str) -> str:
    """A yaml comment made safe for a table cell (no HTML tags, no stray emphasis or pipes)."""
    for char, escaped in (("<", "&lt;"), (">", "&gt;"), ("*", "\\*"), ("|", "\\|")):
        text = text.replace(char, escaped)
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# The three tables


def groups_table() -> str:
    listed, overridden, recipe = default_choices()
    rows = []
    shared = included_folders()
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml"))):
        group = folder.name
        if group in shared:
            continue
        options = ", ".join(code(p.stem) for p in sorted(folder.glob("*.yaml")))
        default = code(listed[group]) if group in listed else f"none (opt in: `+{group}=NAME`)"
        if group in overridden:
            default += f"; `recipe={recipe}` picks {code(overridden[group])}"
        rows.append([code(group), options, default])
    return table(["group", "options", "default"], rows)


def option_table(group: str) -> str:
    folder = group_dir(group)
    listed, overridden, recipe = default_choices()
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        node, notes = option(path)
        default = ""
        if overridden.get(group) == path.stem:
            default = f"**yes** (`recipe={recipe}`)"
        elif listed.get(group) == path.stem and group in overridden:
            default = f"defaults list; `recipe={recipe}` picks `{overridden[group]}`"
        elif listed.get(group) == path.stem:
            default = "**yes**"
        target = code(node["_target_"]) if "_target_" in node else ""
        if notes:
            target = "<br>".join(filter(None, [target, *notes]))
        keys = "<br>".join(f"{code(k)}: {code(fmt(v))}" for k, v in flatten(node).items())
        rows.append([code(path.stem), default, target, keys])
    return table(["option", "default", "target / picks", "keys"], rows)


def keys_table(name: str) -> str:
    """Key, value and line comment of one file, in file order (defaults-list groups too)."""
    path = CONF / f"{name}.yaml"
    node = load(path)
    rows: list[list[str]] = []
    stack: list[tuple[int, str]] = []
    last: list[str] | None = None  # the row a following indented comment-only line continues
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if last is not None and line.index("#") > 0:
                last[2] = f"{last[2]} {prose(stripped.lstrip('#').strip())}".strip()
            continue
        last = None
        entry = DEFAULTS_LINE.match(line)
        if entry and not entry.group("group").startswith("hydra"):
            comment = entry.group("rest").partition("#")[2].strip()
            group, choice = code(entry.group("group")), code(entry.group("option"))
            rows.append([f"{group} (group)", choice, prose(comment)])
            last = rows[-1]
            continue
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent, key = len(match.group("indent")), match.group("key")
        stack = [(i, k) for i, k in stack if i < indent]
        keys = [k for _, k in stack] + [key]
        value, _, comment = match.group("rest").partition(" #")
        if not value.strip():
            stack.append((indent, key))
        if keys[0] in SKIPPED or (not value.strip() and not comment.strip()):
            continue
        shown = code(fmt(lookup(node, keys))) if value.strip() else ""
        rows.append([code(".".join(keys)), shown, prose(comment.strip().lstrip("#").strip())])
        last = rows[-1]
    return table(["key", "default", "what it is"], rows)


def lookup(node: dict[str, Any], keys: list[str]) -> Any:
    for key in keys:
        node = node[key]
    return node
