"""levers.md of experiments/cpu_recipe: each lever against the baseline, paired by training seed.

    python experiments/cpu_recipe/levers_report.py OUT > experiments/cpu_recipe/levers.md
    python experiments/cpu_recipe/levers_report.py OUT --best-length   # post-hoc EMA choice

A run's FID is the one it measured at its end (2000 samples, 50 calls of the default sampler);
the post-hoc EMA row reads ``eval/*_n2000_phema<sigma_rel>.json`` of the lever's runs. The
statistics are ddpm.comparison.stats' (mean, std, t interval, paired t-test).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ddpm.comparison.stats import ALPHA, holm, paired_test, summarize
from ddpm.comparison.table import markdown

SEEDS = (0, 1, 2)
DECLARED_SEEDS = (0, 1, 2, 3, 4)  # README section 4, fixed before its runs
BAR = 1.3  # the quality issue's: a default moves only at >= 1.3x with a significant paired test


def seed_of(run: Path) -> int:
    return int(re.search(r"trainer\.seed=(\d+)", run.name).group(1))


@dataclass(frozen=True)
class Setting:
    """One row: the finished runs in ``OUT/folder`` whose names hold ``has`` and not ``lacks``;
    their FID is the one each measured at its end, or ``<evaluation>.json``'s (a path in the
    run: ``eval/...`` for ddpm.evaluate's default folder)."""

    label: str
    folder: str = "."
    has: str = ""
    lacks: str = ""
    evaluation: str = ""

    def runs(self, out: Path) -> dict[int, Path]:
        where = out / self.folder
        if not where.is_dir():
            return {}
        found = [d for d in where.iterdir() if (d / "summary.json").is_file()]
        found = [d for d in found if "trainer.seed=" in d.name]  # a sweep's seeded jobs only
        keep = [d for d in found if self.has in d.name]
        return {seed_of(d): d for d in keep if not (self.lacks and self.lacks in d.name)}


LR = "trainer.lr_schedule=linear"
OT = "process.pairing=ot"
ODE = "eval/dpm_solver_pp_50_n2000"  # ddpm.evaluate's file for 2000 samples of 50 ODE steps
# the default sampler's 2000 samples (x_T seed = training seed + 1, as the run's own end-of-
# training evaluation drew them) measured on the second evaluator (levers.sh builds it)
SECOND = "eval_second/dpm_solver_pp_sde_50_n2000"
BASELINE = Setting("recipe=ddpm (the default then; EMA 0.999)", lacks=LR)
PROFILED = Setting("the same runs again, post-hoc EMA profiles stored", "posthoc", lacks=LR)
FLOW = Setting("rectified flow, logit-normal t (recipe=flow)", "flow", lacks=OT)
FLOW_OT = Setting("recipe=flow + OT pairing (process.pairing=ot), 50 ODE steps", "flow", has=OT)
LEVERS = (
    Setting("min-SNR-5 weighting (trainer.loss_weighting=min_snr)", "min_snr"),
    FLOW,
    FLOW_OT,
    Setting("batch 64 for 4000 steps (the same images and FLOPs)", "batch"),
)
SCREENS = (
    Setting("lr warm-up 100 steps, linear decay to 0", has=LR),
    Setting("EDM, the data's std as sigma_data (process.sigma_data=0.62)", "edm"),
    Setting("flow with batch 32 for 8000 steps", "flow_batch32"),
)
FLOW_BATCH = Setting("flow with batch 64 for 4000 steps (recipe=cpu now)", "flow_batch")
# a second question beside "against the baseline": OT's own share, against flow without it on
# the same sampler (an OT run takes deterministic samplers only; x_T seeds paired)
FLOW_ODE = Setting("recipe=flow, 50 ODE steps (dpm_solver_pp)", "flow", lacks=OT, evaluation=ODE)
ATTRIBUTION = ((FLOW_OT, FLOW_ODE),)
# README section 4: both flow settings against the baseline on five seeds, on the project
# evaluator and on the same samples measured by another classifier
DECLARED = (BASELINE, FLOW, FLOW_BATCH)
# README section 7: levers on the new default, each against its own runs of section 4
NEW_LEVERS = (Setting("learning rate 2e-3 (optimizer.lr=2e-3)", "new_lr"),)
EVALUATORS = (("the project evaluator", ""), ("the second evaluator", SECOND))


def training_fid(run: Path) -> float:
    return float(json.loads((run / "summary.json").read_text())["fid"])


def posthoc_fids(run: Path, samples: int) -> dict[float, float]:
    """sigma_rel -> FID of every post-hoc EMA evaluation of ``run`` at ``samples`` samples."""
    out = {}
    for path in (run / "eval").glob(f"*_n{samples}_phema*.json"):
        e = json.loads(path.read_text())
        out[float(e["config"]["posthoc_ema"])] = float(e["metrics"]["fid"])
    return out


def best_length(out: Path) -> float:
    """The sigma_rel with the lowest FID on seed 0 of the runs with stored profiles (1000
    samples, x_T seed 1: apart from the 2000-sample measurement's seed 0)."""
    fids = posthoc_fids(PROFILED.runs(out)[0], 1000)
    return min(fids, key=fids.get)


def rows_against(
    base_label: str,
    base: dict[int, float],
    named: list[tuple[str, dict[int, float]]],
    seeds: tuple[int, ...] = SEEDS,
) -> tuple[list[list[str]], dict[str, bool], dict[str, float]]:
    """The baseline's row, then one per named setting tested against it, paired by seed; the
    table's p-values Holm-adjusted together (several settings tested at 0.05 each find a lucky
    win more often than 1 in 20), so a win needs its Holm p below 0.05. Returns the rows,
    which labels won, and each tested label's ratio (baseline / setting over shared seeds)."""

    def cells(fids: dict[int, float]) -> list[str]:
        values = [fids[k] for k in seeds if k in fids]
        s = summarize(values)
        spread = "" if s.std is None else f" ± {s.std:.2f} [{s.low:.2f}, {s.high:.2f}]"
        return [*(f"{fids[k]:.2f}" if k in fids else "-" for k in seeds), f"{s.mean:.2f}{spread}"]

    tests = {}
    for label, fids in named:
        shared = [k for k in seeds if k in fids and k in base]
        if len(shared) >= 2:
            ratio = sum(base[k] for k in shared) / sum(fids[k] for k in shared)
            tests[label] = (
                paired_test([fids[k] for k in shared], [base[k] for k in shared]),
                ratio,
            )
    adjusted = dict(zip(tests, holm([test.p for test, _ in tests.values()]), strict=True))
    rows, won = [[base_label, *cells(base), "-", "-", "-", "-", "baseline"]], {}
    for label, fids in named:
        if label not in tests:
            rows.append([label, *cells(fids), "-", "-", "-", "-", "n < 2 pairs"])
            continue
        (test, ratio), p_holm = tests[label], adjusted[label]
        won[label] = p_holm < ALPHA and test.high < 0
        verdict = "**win**" if won[label] else "not established"
        if won[label] and ratio < BAR:
            verdict += f" (below the {BAR}x bar for a default)"
        diff = f"{test.difference:+.2f} [{test.low:+.2f}, {test.high:+.2f}]"
        rows.append([label, *cells(fids), diff, f"{test.p:.3g}", f"{p_holm:.3g}", f"{ratio:.2f}x",
                     verdict])  # fmt: skip
    return rows, won, {label: ratio for label, (_, ratio) in tests.items()}


def head(seeds: tuple[int, ...] = SEEDS, against: str = "baseline") -> list[str]:
    return ["setting", *(f"seed {s}" for s in seeds), "mean ± std [95% CI]",
            f"setting - {against} [95% CI]", "paired p", "Holm p", f"{against} / setting",
            "verdict"]  # fmt: skip


def fids_of(setting: Setting, out: Path) -> dict[int, float]:
    if not setting.evaluation:
        return {k: training_fid(r) for k, r in setting.runs(out).items()}
    files = {k: r / f"{setting.evaluation}.json" for k, r in setting.runs(out).items()}
    return {k: json.loads(f.read_text())["metrics"]["fid"] for k, f in files.items() if f.is_file()}


def second_evaluator(run: Path) -> str:
    """The second evaluator's shape, seed and test accuracy, as its evaluations recorded them."""
    info = json.loads((run / f"{SECOND}.json").read_text())["evaluator"]
    arch = info["arch"]
    return (f"width {arch['width']}, {arch['feature_dim']} features, training seed {info['seed']}, "
            f"test accuracy {100 * info['test_accuracy']:.2f}%")  # fmt: skip


def table(head: list[str], rows: list[list[str]]) -> None:
    print(markdown(head, rows))


def declared(out: Path) -> None:
    """README section 4's tables and its decision, exactly as declared: paired t-tests over
    the five seeds, Holm-adjusted over the two flow settings, on both evaluators."""
    seeds = DECLARED_SEEDS
    passed: dict[str, list[bool]] = {s.label: [] for s in DECLARED[1:]}
    ratios: dict[str, float] = {}
    for name, evaluation in EVALUATORS:
        base, *others = (fids_of(replace(s, evaluation=evaluation), out) for s in DECLARED)
        if not all(set(seeds) <= set(f) for f in (base, *others)):
            found = ", ".join(
                f"{s.label}: {sorted(f)}" for s, f in zip(DECLARED, (base, *others), strict=True)
            )
            print(f"\nThe declared study on {name} waits for seeds {list(seeds)} ({found}).")
            return
        named = [(s.label, f) for s, f in zip(DECLARED[1:], others, strict=True)]
        rows, won, ratio = rows_against(DECLARED[0].label, base, named, seeds)
        for label, _ in named:
            passed[label].append(won[label])
        if not evaluation:  # the bar is read on the project evaluator
            ratios = ratio
        if evaluation:
            name += f" ({second_evaluator(next(iter(DECLARED[0].runs(out).values())))})"
        print(f"\nThe declared study (README section 4) on {name}: FID of 2000 samples, the "
              "default sampler, x_T seed = training seed + 1; paired t-tests against the "
              "baseline, Holm-adjusted over the two flow settings:\n")  # fmt: skip
        table(head(seeds), rows)
    established = [k for k, wins in passed.items() if all(wins) and ratios[k] >= BAR]
    listed = "; ".join(f"{k}: {ratios[k]:.2f}x, wins on {sum(w)} of 2 evaluators"
                       for k, w in passed.items())  # fmt: skip
    if established:
        best = max(established, key=ratios.get)
        print(
            f"\nDecision, as declared: established: {', '.join(established)} ({listed}); "
            f"the candidate for recipe=cpu is {best}."
        )
    else:
        print(
            f"\nDecision, as declared: neither setting is established ({listed}); nothing changes."
        )


def new_default(out: Path) -> None:
    """README section 7: each lever on recipe=cpu's setting (flow, batch 64, 4000 steps)
    against that setting's own runs, paired by seed, Holm-adjusted over the levers."""
    named = [(lever.label, fids) for lever in NEW_LEVERS if (fids := fids_of(lever, out))]
    if not named:
        return
    print("\nLevers on the new default (README section 7): recipe=cpu's setting at 4000 "
          "steps of 64, each lever against its runs of section 4, paired by seed:\n")  # fmt: skip
    rows = rows_against(FLOW_BATCH.label, fids_of(FLOW_BATCH, out), named)[0]
    table(head(against="recipe=cpu"), rows)


def main(out: Path) -> None:
    base = fids_of(BASELINE, out)
    profiled = PROFILED.runs(out)
    again = fids_of(PROFILED, out)
    sigma = best_length(out) if 0 in profiled else None
    posthoc = {}
    if sigma is not None:
        posthoc = {k: f for k, r in profiled.items() if (f := posthoc_fids(r, 2000).get(sigma))}
    named = []
    if again:
        named.append((PROFILED.label, again))
    if posthoc:
        named.append((f"their post-hoc EMA, sigma_rel={sigma:g}", posthoc))
    named += [(lever.label, fids) for lever in LEVERS if (fids := fids_of(lever, out))]
    print("FID of 2000 samples at 50 calls (dpm_solver_pp_sde) after 2000 steps on res_tiny, "
          "per training seed (0, 1, 2); paired t-tests over the seeds against the baseline, "
          "Holm-adjusted over the table's rows.\n")  # fmt: skip
    table(head(), rows_against(BASELINE.label, base, named)[0])
    for setting, against in ATTRIBUTION:
        fids, other = fids_of(setting, out), fids_of(against, out)
        if len(set(fids) & set(other)) >= 2:
            print(f"\nAgainst {against.label} instead, paired by seed:\n")
            table(head(against="that"), rows_against(against.label, other,
                                                     [(setting.label, fids)])[0])  # fmt: skip
    declared(out)
    if sigma is not None:
        choice = posthoc_fids(profiled[0], 1000)
        listed = ", ".join(f"{k:g}: {v:.2f}" for k, v in sorted(choice.items()))
        print(f"\nPost-hoc EMA length chosen on seed 0 (1000 samples, x_T seed 1): {listed}.")
    screens = [(screen, fids_of(screen, out)) for screen in SCREENS]
    if any(fids for _, fids in screens):
        print("\nScreens on one or two training seeds (no interval: not established by design), "
              "the same protocol:\n")  # fmt: skip
        table(["setting", "seed", "FID", "baseline's FID, same seed"],
              [[screen.label, str(k), f"{f:.2f}", f"{base.get(k, float('nan')):.2f}"]
               for screen, fids in screens for k, f in sorted(fids.items())])  # fmt: skip
    new_default(out)
    thirty = out / "default_30min" / "summary.json"
    if thirty.is_file():
        s = json.loads(thirty.read_text())
        print(f"\nrecipe=cpu after its own 30 minutes (training seed 0): {s['steps']} steps, "
              f"{s['images_per_s']:.0f} images/s, FID {s['fid']:.2f} (2000 samples).")  # fmt: skip
    lr = SCREENS[0].runs(out)
    extra = posthoc_fids(lr[0], 1000) if 0 in lr else {}
    if extra:
        listed = ", ".join(f"{k:g}: {v:.2f}" for k, v in sorted(extra.items()))
        print(f"\nThe lr screen's post-hoc EMA lengths (seed 0, 1000 samples, x_T seed 1): "
              f"{listed}.")  # fmt: skip


if __name__ == "__main__":
    target = Path(sys.argv[1])
    if sys.argv[2:] == ["--best-length"]:
        print(f"{best_length(target):g}")
    else:
        main(target)
