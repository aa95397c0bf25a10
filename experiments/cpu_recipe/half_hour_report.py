"""half_hour.md of experiments/cpu_recipe: README sections 5 and 6.

    python experiments/cpu_recipe/half_hour_report.py OUT LEVERS > half_hour.md
    python experiments/cpu_recipe/half_hour_report.py OUT LEVERS --winner   # section 6's plan

OUT holds half_hour.sh's runs, LEVERS levers.sh's (section 4's runs and the first 30-minute
run). Every FID is 2000 samples at 50 calls of dpm_solver_pp_sde with x_T seed = training seed
+ 1; the clock is the trainer's own (ddpm.comparison.progress), evaluations not counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ddpm.comparison.jobs import load_job
from ddpm.comparison.progress import quality_over_time
from ddpm.comparison.stats import ALPHA, holm, paired_test, summarize
from ddpm.comparison.table import markdown

TARGET = 8.0  # the quality issue's: FID <= 8, mean of 3 seeds, after recipe=cpu's 30 minutes
BAR = 1.3  # the quality issue's bar for moving recipe=cpu
SEEDS = (0, 1, 2, 3, 4)  # section 6, fixed before its evaluations
PLANS = ("karras", "linspace", "quadratic")  # against logsnr, the default
SECOND = "eval_second/dpm_solver_pp_sde_50_n2000.json"


def half_hour_runs(out: Path, levers: Path) -> dict[int, Path]:
    """recipe=cpu's 30-minute runs by training seed: seed 0 is levers.sh's (stopped by its
    30 minutes at 6745 steps), seeds 1 and 2 half_hour.sh's (6745 steps)."""
    runs = {0: levers / "default_30min", 1: out / "recipe_cpu_seed1", 2: out / "recipe_cpu_seed2"}
    return {k: r for k, r in runs.items() if (r / "summary.json").is_file()}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def fid_file(path: Path) -> float | None:
    return json.loads(path.read_text())["metrics"]["fid"] if path.is_file() else None


def stat_cell(values: list[float]) -> str:
    s = summarize(values)
    return (
        f"{s.mean:.2f}"
        if s.std is None
        else f"{s.mean:.2f} ± {s.std:.2f} [{s.low:.2f}, {s.high:.2f}]"
    )


def section5(out: Path, levers: Path) -> None:
    runs = half_hour_runs(out, levers)
    print("## 5. recipe=cpu after its 30 minutes (6745 steps of batch 64)\n")
    rows, fids, second = [], [], []
    for seed, run in runs.items():
        s = summary(run)
        fids.append(s["fid"])
        other = fid_file(run / SECOND)
        second += [other] if other is not None else []
        rows.append([str(seed), str(s["steps"]), f"{s['train_time_s'] / 60:.1f}",
                     f"{s['images_per_s']:.0f}", f"{s['fid']:.2f}", f"{s['precision']:.3f}",
                     f"{s['recall']:.3f}", "-" if other is None else f"{other:.2f}"])  # fmt: skip
    second_cell = stat_cell(second) if len(second) == len(fids) else "-"
    rows.append(["mean ± std [95% CI]", "", "", "", stat_cell(fids), "", "", second_cell])
    print(markdown(["training seed", "steps", "training min", "images/s", "FID",
                    "precision", "recall", "FID, second evaluator"], rows))  # fmt: skip
    mean = summarize(fids).mean
    old = out / "recipe_ddpm_seed0"
    if (old / "summary.json").is_file():
        s, other = summary(old), fid_file(old / SECOND)
        also = "" if other is None else f", second evaluator {other:.2f}"
        print(
            f"\nrecipe=ddpm (the old default), training seed 0: {s['steps']} steps of 128 in "
            f"{s['train_time_s'] / 60:.1f} training minutes, FID {s['fid']:.2f}{also}; the "
            f"new default's mean is {s['fid'] / mean:.2f}x lower (one seed of the old)."
        )
    met = "met" if len(fids) >= 3 and mean <= TARGET else "not met"
    print(f"\nTarget FID <= {TARGET:g} (mean of 3 seeds): {met} ({len(fids)} seeds, mean "
          f"{mean:.2f}).\n")  # fmt: skip
    print("### FID during training against the trainer's clock\n")
    rows = []
    for name in ("recipe_cpu_seed1", "recipe_cpu_seed2", "recipe_ddpm_seed0"):
        run = out / name
        if not (run / "summary.json").is_file():
            continue
        job = load_job(run)
        for step, (minutes, fid) in quality_over_time(job.metrics, job.batch_size).items():
            rows.append([name, str(step), f"{minutes:.1f}", f"{fid:.2f}"])
    print(markdown(["run", "step", "training min", "FID"], rows))
    print()


def plan_fids(levers: Path, plan: str) -> dict[int, float]:
    """Section 6: seed -> FID of the plan on recipe=cpu's run of that seed (section 4's)."""
    out = {}
    for seed in SEEDS:
        found = list((levers / "flow_batch").glob(f"*trainer.seed={seed}"))
        if found:
            fid = fid_file(found[0] / f"eval_spacing_{plan}" / "dpm_solver_pp_sde_50_n2000.json")
            if fid is not None:
                out[seed] = fid
    return out


def section6(levers: Path) -> str | None:
    """The declared test's table; returns the winning plan, or None."""
    base = plan_fids(levers, "logsnr")
    named = {plan: plan_fids(levers, plan) for plan in PLANS}
    complete = {p: f for p, f in named.items() if set(f) == set(SEEDS) == set(base)}
    tests = {
        p: paired_test([f[k] for k in SEEDS], [base[k] for k in SEEDS]) for p, f in complete.items()
    }
    adjusted = dict(zip(tests, holm([t.p for t in tests.values()]), strict=True)) if tests else {}
    head = ["plan", *(f"seed {s}" for s in SEEDS), "mean ± std [95% CI]",
            "plan - logsnr [95% CI]", "paired p", "Holm p", "logsnr / plan", "verdict"]  # fmt: skip
    base_cells = [f"{base[k]:.2f}" if k in base else "-" for k in SEEDS]
    base_stat = stat_cell(list(base.values())) if base else "-"
    rows = [["logsnr (the default)", *base_cells, base_stat, "-", "-", "-", "-", "baseline"]]
    won = {}
    for plan, fids in named.items():
        cells = [f"{fids[k]:.2f}" if k in fids else "-" for k in SEEDS]
        if plan not in tests:
            rows.append([plan, *cells, "-", "-", "-", "-", "-", "incomplete"])
            continue
        t, p_holm = tests[plan], adjusted[plan]
        ratio = sum(base.values()) / sum(fids.values())
        established = p_holm < ALPHA and t.high < 0
        if established:
            won[plan] = summarize(list(fids.values())).mean
        rows.append([plan, *cells, stat_cell(list(fids.values())),
                     f"{t.difference:+.2f} [{t.low:+.2f}, {t.high:+.2f}]", f"{t.p:.3g}",
                     f"{p_holm:.3g}", f"{ratio:.2f}x",
                     "**established**" if established else "not established"])  # fmt: skip
    print("## 6. The default sampler's plan on recipe=cpu's five runs (declared)\n")
    print(markdown(head, rows))
    winner = min(won, key=won.get) if won else None
    print(f"\nWinner: {winner or 'none established'}.\n")
    return winner


def confirm(out: Path, levers: Path, plan: str) -> None:
    """The winner on the three 30-minute runs, beside their own logsnr FID."""
    rows = []
    for seed, run in half_hour_runs(out, levers).items():
        fid = fid_file(run / f"eval_spacing_{plan}" / "dpm_solver_pp_sde_50_n2000.json")
        base = summary(run)["fid"]
        rows.append([str(seed), f"{base:.2f}", "-" if fid is None else f"{fid:.2f}"])
    print(f"### {plan} on the three 30-minute runs\n")
    print(markdown(["training seed", "logsnr (the run's own)", plan], rows))


def main(out: Path, levers: Path) -> None:
    print("# cpu_recipe: the half hour (README sections 5 and 6)\n")
    print("Written by `half_hour_report.py` from the runs of `half_hour.sh`; FID of 2000 samples "
          "at 50 calls of dpm_solver_pp_sde, x_T seed = training seed + 1.\n")  # fmt: skip
    section5(out, levers)
    winner = section6(levers)
    if winner:
        confirm(out, levers, winner)


if __name__ == "__main__":
    out_dir, levers_dir = Path(sys.argv[1]), Path(sys.argv[2])
    if "--winner" in sys.argv[3:]:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            best = section6(levers_dir)
        print(best or "")
    else:
        main(out_dir, levers_dir)
