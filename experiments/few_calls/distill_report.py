"""Table and grids of a distillation measured by ``distill.sh``: the student against its teacher
on the same x_T, and both against the teacher's 1000-step baseline.

    python experiments/few_calls/distill_report.py OUT [--name flow_logit_normal]

Reads ``OUT/results_{student,teacher}.jsonl`` and the images stored beside them; writes
``distill_<name>.md`` (the table), ``distill_<name>.png`` (grids) and appends the rows, tagged
with the model, to ``distill_results.jsonl`` here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import grids

HERE = Path(__file__).parent


def rows_of(out: Path) -> list[dict]:
    """Every measured row, tagged with its model; a setting measured again replaces the first."""
    rows: dict[tuple, dict] = {}
    for model in ("student", "teacher"):
        path = out / f"results_{model}.jsonl"
        for line in path.read_text().splitlines() if path.is_file() else []:
            r = {"model": model, **json.loads(line)}
            rows[(model, r["sampler"], r["nfe"], r["count"])] = r
    return list(rows.values())


def label(row: dict) -> str:
    if row["sampler"] == "distilled":
        return f"{row['model']}, DDIM trailing"
    if row["sampler"] == "ddpm":
        return "teacher, 1000-step ancestral"
    return f"teacher, {row['sampler']}"


def table(rows: list[dict]) -> str:
    """One row per (model, sampler, calls, samples), with the ratio to the 1000-step FID at
    the same sample count where it was measured."""
    base = {r["count"]: r["fid"] for r in rows if r["sampler"] == "ddpm"}
    lines = [
        "| model, sampler | calls | samples | FID | KID x1e3 | vs 1000 steps | images/s (1 core) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"] != "student", r["nfe"], r["count"])):
        ratio = f"{r['fid'] / base[r['count']]:.2f}x" if r["count"] in base else ""
        lines.append(
            f"| {label(r)} | {r['nfe']} | {r['count']} | {r['fid']:.1f} | {r['kid']:.1f} "
            f"| {ratio} | {r['images_per_s']:.3g} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--name", default="flow_logit_normal")
    p.add_argument("--count", type=int, default=2000, help="the stored runs the grids show")
    args = p.parse_args()
    rows = rows_of(args.out)
    (HERE / f"distill_{args.name}.md").write_text(table(rows) + "\n")
    with open(HERE / "distill_results.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps({"teacher": args.name, **r}) + "\n")
    n = args.count
    picks = [(f"student, {k} call{'s' * (k > 1)}", "student", f"steps={k}") for k in (1, 2, 4)]
    picks += [("teacher, 4 calls (no distillation)", "teacher", "steps=4")]
    picks += [("teacher, ode10 (its pairs' solver)", "teacher", "ode10")]
    files = []
    for title, model, tag in picks:
        name = f"distilled_{tag}" if tag.startswith("steps") else tag
        files.append((title, args.out / f"images_{model}" / "ema" / f"{name}_n{n}_s100000.pt"))
    grids([(t, f) for t, f in files if f.is_file()], HERE / f"distill_{args.name}.png")
    print(table(rows))


if __name__ == "__main__":
    main()
