"""FID against training minutes: each run's clock rebuilt from its logged throughput.

A window of ``k`` steps at batch ``b`` logged at ``r`` images/s took ``k b / r`` seconds, so
the clock at any logged step is a closed form of the rows; ``ddpm.compare`` draws each
setting's training-time FIDs at those minutes.
"""

from __future__ import annotations

import json

import pytest
from test_compare_keys import make_job

from ddpm.compare import loss_figure
from ddpm.comparison.jobs import find_jobs
from ddpm.comparison.progress import minutes_at, quality_over_time, training_minutes

# batch 64: 50 steps at 32 images/s = 100 s, then 50 steps at 64 images/s = 50 s
ROWS = [
    {"step": 50, "loss": 0.5, "images_per_s": 32.0},
    {"step": 50, "fid": 30.0},
    {"step": 100, "loss": 0.4, "images_per_s": 64.0},
    {"step": 100, "fid": 20.0},
]


def test_the_clock_is_steps_times_batch_over_throughput_summed_over_windows():
    assert training_minutes(ROWS, 64) == pytest.approx({50: 100 / 60, 100: 150 / 60})
    assert quality_over_time(ROWS, 64) == {50: (100 / 60, 30.0), 100: (150 / 60, 20.0)}


def test_a_step_between_rows_is_read_on_the_line_and_past_the_last_is_unknown():
    clock = training_minutes(ROWS, 64)
    assert minutes_at(clock, 75) == pytest.approx((100 + 25) / 60)
    assert minutes_at(clock, 25) == pytest.approx(50 / 60)  # from (0, 0) to the first row
    assert minutes_at(clock, 101) is None
    rows = [*ROWS, {"step": 150, "fid": 10.0}]  # measured after the last logged row
    assert list(quality_over_time(rows, 64)) == [50, 100]


def test_a_row_without_throughput_or_a_repeated_step_adds_no_time():
    rows = [ROWS[0], {"step": 50, "loss": 0.5, "images_per_s": 1.0}, {"step": 80, "loss": 0.1}]
    assert training_minutes(rows, 64) == pytest.approx({50: 100 / 60})


def test_compare_draws_each_settings_fid_against_its_minutes(tmp_path, make_cfg):
    # two seeds of batch 64 (FIDs 30/20 and 34/24 at steps 50/100) and one run of batch 128
    # at half the throughput in images: each step takes 4x as long
    runs = [("0", "64", 0, 1.0, (30.0, 20.0)), ("1", "64", 1, 1.0, (34.0, 24.0)),
            ("2", "128", 0, 0.5, (28.0, 18.0))]  # fmt: skip
    for name, batch, seed, speed, fids in runs:
        overrides = [f"trainer.batch_size={batch}", f"trainer.seed={seed}"]
        cfg = make_cfg("sampler=heun", "trainer.eval_samples=200", *overrides)
        summary = {"final_loss": 0.4, "fid": fids[-1]}
        folder = make_job(tmp_path, name, overrides, cfg, summary, {"sampler": "heun"})
        rows = [{**r, "images_per_s": r["images_per_s"] * speed} if "loss" in r else dict(r)
                for r in ROWS]  # fmt: skip
        rows[1]["fid"], rows[3]["fid"] = fids
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = loss_figure(find_jobs(tmp_path, ["trainer.seed"]), "t")
    assert len(fig.axes) == 3
    over_time = fig.axes[2]
    assert "heun/20 calls/200 samples" in over_time.get_title()
    small, large = over_time.lines
    assert small.get_label() == "trainer.batch_size=64 (n=2)"
    assert list(small.get_xdata()) == pytest.approx([100 / 60, 150 / 60])
    assert list(small.get_ydata()) == pytest.approx([32.0, 22.0])  # the seeds' mean
    # batch 128 at half the images/s: a window of 50 steps takes 2 x 2 = 4x as long
    assert list(large.get_xdata()) == pytest.approx([400 / 60, 600 / 60])
    assert list(large.get_ydata()) == [28.0, 18.0]
    (band,) = over_time.collections  # the two seeds' min-max; none for one run
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(20.0) and max(ys) == pytest.approx(34.0)


def test_no_panel_when_no_run_measured_fid_at_two_steps(tmp_path, make_cfg):
    cfg = make_cfg("sampler=heun", "trainer.eval_samples=200")
    folder = make_job(tmp_path, "0", ["trainer.seed=0"], cfg, {"fid": 20.0}, {"sampler": "heun"})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[2:]))
    assert len(loss_figure(find_jobs(tmp_path, ["trainer.seed"]), "t").axes) == 2
