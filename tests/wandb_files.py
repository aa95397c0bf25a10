"""Reads an offline W&B run back from its local files (the ``run-<id>.wandb`` record log).

The log is a sequence of 32 KiB blocks of length-prefixed chunks (the LevelDB log layout,
with a 7-byte ``:W&B`` file header); each whole record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class WandbRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None
    folder: Path = Path()


def _chunks(data: bytes):
    assert data[:4] == b":W&B", "not a W&B run log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero padding to the end of a block
            pos += left
            continue
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(folder: Path) -> WandbRun:
    """One run folder (``.../wandb/offline-run-<date>-<id>``)."""
    (log_file,) = folder.glob("run-*.wandb")
    run = WandbRun(folder=folder)
    for raw in _chunks(log_file.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run  # later run records may be partial updates: keep what is set
            run.run_id = r.run_id or run.run_id
            run.name = r.display_name or run.name
            run.group = r.run_group or run.group
            run.project = r.project or run.project
            run.tags = list(r.tags) or run.tags
            run.config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "files":
            run.files += [f.path for f in rec.files.files]
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    return run


def read_runs(run_dir: Path) -> list[WandbRun]:
    """Every W&B run a job left under ``<run_dir>/wandb``.

    Runs of this process are written by its W&B service, which may still hold the last records
    after ``finish()``; tearing it down first flushes them (a later run starts a new one).
    """
    import wandb

    wandb.teardown()
    folders = sorted((Path(run_dir) / "wandb").glob("*run-*"))
    return [read_run(d) for d in folders if d.is_dir() and not d.is_symlink()]  # not latest-run
