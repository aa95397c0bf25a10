"""One interface for everything a run reports: metrics, images, a final summary.

:class:`Tracker` always writes ``metrics.jsonl`` (one JSON object per logged step) and
``summary.json`` in the run dir; experiment trackers (W&B) subclass it and forward the same
calls. The ``logger`` config group picks the class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Tracker:
    """Local files only: ``metrics.jsonl`` and ``summary.json``."""

    def __init__(self, run_dir: str | Path, run_config: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_config = run_config or {}
        self._metrics = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._metrics.write(json.dumps({"step": step, **metrics}) + "\n")
        self._metrics.flush()

    def log_image(self, key: str, path: str | Path, step: int, caption: str | None = None) -> None:
        """An image file already written into the run dir (local tracking keeps it there)."""

    def summary(self, values: dict[str, Any]) -> None:
        path = self.run_dir / "summary.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**current, **values}, indent=2) + "\n")

    def finish(self, exit_code: int = 0) -> None:
        self._metrics.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged rows of a run, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
