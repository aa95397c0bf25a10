"""``ddpm.compare`` groups the seeds of one setting: one row with n, each metric's mean, std and
95% interval, a comparisons section that says which gaps are established, error bars in the
plot and, with ``wandb=true``, one offline W&B run holding the same numbers."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from test_compare_keys import columns, make_job
from wandb_files import _chunks, read_runs

from ddpm.compare import loss_figure, report
from ddpm.comparison.jobs import find_jobs
from ddpm.comparison.stats import paired_test, summarize
from ddpm.errors import UserError

T_975_2 = 4.302652729749462
FID = "FID [training: heun/20 calls/200 samples]"
# (folder, lr, seed, final loss, FID, losses at steps 1 and 2)
JOBS = [
    ("0", "1e-3", 0, 0.30, 40.0, (0.9, 0.30)),
    ("1", "1e-4", 0, 0.50, 50.0, (1.0, 0.50)),
    ("2", "1e-3", 1, 0.32, 42.0, (0.8, 0.32)),
    ("3", "1e-4", 1, 0.52, 53.0, (1.1, 0.52)),
    ("4", "1e-3", 2, 0.34, 44.0, (0.7, 0.34)),
    ("5", "1e-4", 2, 0.54, 55.0, (1.2, 0.54)),
    ("6", "1e-2", 0, 0.40, 45.0, (0.6, 0.40)),  # one seed only
]


@pytest.fixture
def sweep(tmp_path: Path, make_cfg) -> Path:
    """Three settings (lr), two of them with seeds 0, 1, 2, one with seed 0; a fourth seed of
    lr=1e-3 failed. Each job measured FID while training (200 samples of Heun-11)."""
    for name, lr, seed, loss, fid, curve in JOBS:
        cfg = make_cfg("sampler=heun", "trainer.eval_samples=200", f"trainer.seed={seed}")
        overrides = [f"optimizer.lr={lr}", f"trainer.seed={seed}"]
        summary = {"final_loss": loss, "fid": fid, "kid": fid / 1000}
        folder = make_job(tmp_path, name, overrides, cfg, summary, {"sampler": "heun"})
        rows = [{"step": s + 1, "loss": v} for s, v in enumerate(curve)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg("sampler=heun", "trainer.seed=3")
    failed = make_job(tmp_path, "7", ["optimizer.lr=1e-3", "trainer.seed=3"], cfg, {}, None)
    (failed / "FAILED").write_text("NonFiniteLoss: loss is nan at step 2")
    (failed / "summary.json").unlink()
    return tmp_path


def test_seeds_of_a_setting_are_one_row_with_their_mean_std_and_interval(sweep):
    table = columns(report(sweep).table)
    assert table["overrides"] == [
        "`optimizer.lr=1e-3`",
        "`optimizer.lr=1e-4`",
        "`optimizer.lr=1e-2`",
        "`optimizer.lr=1e-3`",
    ]
    assert table["job"] == ["trainer.seed=0,1,2", "trainer.seed=0,1,2", "6", "7"]
    assert table["n"] == ["3", "3", "1", "-"]
    assert table["status"] == ["ok", "ok", "ok", "failed: NonFiniteLoss: loss is nan at step 2"]
    # lr=1e-3: losses 0.30, 0.32, 0.34 -> 0.32 +- 0.02, half-width t_{.975,2} 0.02 / sqrt 3
    half = T_975_2 * 0.02 / math.sqrt(3)
    assert table["final loss"][0] == f"0.3200 ± 0.0200 [{0.32 - half:.4f}, {0.32 + half:.4f}]"
    # its FIDs 40, 42, 44 -> 42 +- 2, [37.03, 46.97]
    assert table[FID][0] == "42.00 ± 2.00 [37.03, 46.97]"
    fids = [50.0, 53.0, 55.0]
    mean, std = statistics.mean(fids), statistics.stdev(fids)
    half = T_975_2 * std / math.sqrt(3)
    assert table[FID][1] == f"{mean:.2f} ± {std:.2f} [{mean - half:.2f}, {mean + half:.2f}]"
    assert table[FID][2] == "45.00" and table["final loss"][2] == "0.4000"  # n=1: its value


def test_the_best_setting_is_tested_against_every_other(sweep):
    section = report(sweep).comparisons
    rows = [r for r in section.splitlines() if r.startswith(f"| {FID} |")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    # lr=1e-3 is best (mean 42); against lr=1e-4 the seeds pair: differences -10, -11, -11
    best, other, diff, interval, test, p, p_holm, said = cells[0][1:]
    assert (best, other, test) == (
        "`optimizer.lr=1e-3`",
        "`optimizer.lr=1e-4`",
        "paired t-test (3 seeds)",
    )
    d = [-10.0, -11.0, -11.0]
    half = T_975_2 * statistics.stdev(d) / math.sqrt(3)
    assert diff == f"{statistics.mean(d):.2f}"
    assert interval == f"[{statistics.mean(d) - half:.2f}, {statistics.mean(d) + half:.2f}]"
    assert float(p) < 0.05 and said.startswith("**win**: paired t-test over 3 seeds, p=")
    assert p_holm == p  # the only comparison of FID that ran a test: nothing to adjust
    # against the one-seed lr=1e-2 (45): no interval, so no verdict either way
    assert cells[1][1:3] == ["`optimizer.lr=1e-3`", "`optimizer.lr=1e-2`"]
    assert cells[1][3:] == [
        "-3.00", "-", "none (a side has n=1)", "-", "-",
        "not established: n=1: no interval, and fewer than 2 shared seeds to pair",
    ]  # fmt: skip
    assert section.index("| FID [") < section.index("| KID [")  # FID first
    md = (sweep / "comparison.md").read_text()
    assert "## Comparisons" in md and rows[0] in md


def test_a_named_baseline_is_tested_against_every_other_setting_with_its_ratio(sweep):
    """baseline=optimizer.lr=1e-4 (FIDs 50, 53, 55): lr=1e-3 (40, 42, 44) is a paired win,
    1.25x (52.67 / 42); lr=1e-2 has one seed, so no verdict."""
    section = report(sweep, baseline="optimizer.lr=1e-4").comparisons
    assert "Every setting against the baseline `optimizer.lr=1e-4`" in section
    rows = [r for r in section.splitlines() if r.startswith(f"| {FID} |")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [c[1:3] for c in cells] == [
        ["`optimizer.lr=1e-3`", "`optimizer.lr=1e-4`"],
        ["`optimizer.lr=1e-2`", "`optimizer.lr=1e-4`"],
    ]
    assert cells[0][4] == f"{statistics.mean([50, 53, 55]) / 42:.2f}x"
    assert cells[0][3] == f"{statistics.mean([-10.0, -11.0, -11.0]):.2f}"
    assert cells[0][-1].startswith("**win**: paired t-test over 3 seeds")
    assert cells[1][4] == f"{statistics.mean([50, 53, 55]) / 45:.2f}x"
    assert cells[1][-1].startswith("not established: n=1")
    with pytest.raises(UserError, match=r"baseline='lr=1': a setting's label: \['optimizer"):
        report(sweep, baseline="lr=1")


def test_two_wins_at_p_near_004_are_not_established_together_holm(tmp_path, make_cfg):
    """Against the baseline 50, 53, 55: 47, 47, 51 (differences -3, -6, -4, p = 0.0390) and
    47, 47, 50 (-3, -6, -5, p = 0.0339) each pass p < 0.05 alone; tested together, Holm
    doubles the smaller p (0.0678) and keeps the larger at least that: neither is a win."""
    fids = {"1e-4": (50.0, 53.0, 55.0), "1e-3": (47.0, 47.0, 51.0), "3e-3": (47.0, 47.0, 50.0)}
    for n, (lr, seed) in enumerate((lr, s) for lr in fids for s in range(3)):
        cfg = make_cfg("sampler=heun", "trainer.eval_samples=200", f"trainer.seed={seed}")
        overrides = [f"optimizer.lr={lr}", f"trainer.seed={seed}"]
        make_job(tmp_path, str(n), overrides, cfg, {"fid": fids[lr][seed]}, {"sampler": "heun"})
    section = report(tmp_path, baseline="optimizer.lr=1e-4").comparisons
    rows = [r for r in section.splitlines() if r.startswith(f"| {FID} |")]
    cells = {c[1]: c for c in ([x.strip() for x in r.strip("|").split("|")] for r in rows)}
    p = {lr: paired_test(fids[lr], fids["1e-4"]).p for lr in ("1e-3", "3e-3")}
    assert p["1e-3"] == pytest.approx(0.03901, abs=1e-5)
    assert p["3e-3"] == pytest.approx(0.03391, abs=1e-5)
    for lr in ("1e-3", "3e-3"):
        cell = cells[f"`optimizer.lr={lr}`"]
        assert float(cell[7]) == pytest.approx(p[lr], rel=1e-3)
        assert float(cell[8]) == pytest.approx(2 * p["3e-3"], rel=1e-3)  # 0.0678 both
        assert cell[9].startswith("not established: paired t-test over 3 seeds")
        assert "but Holm-adjusted over 2 tests p=0.0678" in cell[9]


def test_replicate_keys_empty_gives_a_row_per_job(sweep):
    table = columns(report(sweep, replicate_keys=[]).table)
    assert table["n"] == ["1"] * 7 + ["-"]
    assert table["overrides"][0] == "`optimizer.lr=1e-3,trainer.seed=0`"


def test_a_metric_some_seeds_lack_says_how_many_measured_it(sweep):
    summary = json.loads((sweep / "4" / "summary.json").read_text())
    del summary["fid"]
    (sweep / "4" / "summary.json").write_text(json.dumps(summary))
    table = columns(report(sweep).table)
    half = 12.706204736174698 * math.sqrt(2) / math.sqrt(2)  # 40, 42: std sqrt 2, t at 1 df
    assert table[FID][0] == f"41.00 ± 1.41 [{41 - half:.2f}, {41 + half:.2f}] (n=2)"
    assert table["n"][0] == "3"


def test_the_plot_draws_mean_curves_with_bands_and_fid_error_bars(sweep):
    jobs = find_jobs(sweep, ["trainer.seed"])
    fig = loss_figure(jobs, "t")
    loss_ax, fid_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.lines}
    assert list(lines) == [
        "optimizer.lr=1e-3",
        "optimizer.lr=1e-4",
        "optimizer.lr=1e-2",
        "optimizer.lr=1e-3 (#7, failed)",
    ]
    assert list(lines["optimizer.lr=1e-3"].get_ydata()) == pytest.approx([0.8, 0.32])
    (band, *_), lows = loss_ax.collections, [0.7, 0.30]  # lr=1e-3: min-max over its seeds
    assert len(loss_ax.collections) == 2  # the two settings with seeds; none for n=1
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(min(lows)) and max(ys) == pytest.approx(0.9)
    # FID: a point per setting at its mean, the bar its 95% interval, none at n=1
    points = [c.lines[0].get_ydata()[0] for c in fid_ax.containers]
    assert points == pytest.approx([42.0, statistics.mean([50.0, 53.0, 55.0]), 45.0])
    bars = [c.lines[2][0].get_segments()[0][:, 1] for c in fid_ax.containers]
    stat = summarize([40.0, 42.0, 44.0])
    assert list(bars[0]) == pytest.approx([stat.low, stat.high])
    assert list(bars[2]) == [45.0, 45.0]  # n=1: no bar
    assert [t.get_text() for t in fid_ax.get_xticklabels()][2] == "optimizer.lr=1e-2\nn=1"


def test_wandb_true_logs_one_offline_compare_run_with_the_statistics(sweep):
    report(sweep, wandb=True)
    (run,) = read_runs(sweep)
    assert run.group == sweep.name and run.name == f"compare {sweep.name}"
    assert run.project == "ddpm" and run.exit_code == 0
    log = next(run.folder.glob("run-*.wandb")).read_bytes()
    from wandb.proto import wandb_internal_pb2 as pb

    types = set()
    for raw in _chunks(log):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "run":
            types.add(rec.run.job_type)
    assert "compare" in types
    s = run.summary
    loss = summarize([0.30, 0.32, 0.34])
    assert s["optimizer.lr=1e-3/final_loss/mean"] == pytest.approx(loss.mean)
    assert s["optimizer.lr=1e-3/final_loss/std"] == pytest.approx(loss.std)
    assert s["optimizer.lr=1e-3/final_loss/ci95_low"] == pytest.approx(loss.low)
    assert s["optimizer.lr=1e-3/final_loss/ci95_high"] == pytest.approx(loss.high)
    assert s["optimizer.lr=1e-3/final_loss/n"] == 3
    assert s[f"optimizer.lr=1e-4/{FID}/mean"] == pytest.approx(statistics.mean([50, 53, 55]))
    assert s[f"optimizer.lr=1e-2/{FID}/n"] == 1 and s[f"optimizer.lr=1e-2/{FID}/mean"] == 45.0
    assert s[f"optimizer.lr=1e-2/{FID}/std"] is None  # n=1: no spread, said as null
    (table_file,) = [f for f in run.files if f.startswith("media/table/comparison")]
    logged = json.loads((run.folder / "files" / table_file).read_text())
    assert logged["columns"][:3] == ["job", "overrides", "n"]
    assert [r[1] for r in logged["data"]] == [
        "optimizer.lr=1e-3", "optimizer.lr=1e-4", "optimizer.lr=1e-2", "optimizer.lr=1e-3",
    ]  # fmt: skip
    assert logged["data"][0][4] == "42.00 ± 2.00 [37.03, 46.97]"
