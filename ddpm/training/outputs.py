"""What a run writes while it trains: checkpoints, post-hoc EMA snapshots, digit grids,
quality measurements.

Each is one plain call from the loop; only rank 0 writes (the loop calls these there).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ddpm.runs import checkpoint, viz
from ddpm.runs.tracking import Tracker
from ddpm.samplers import auto_plan
from ddpm.samplers.base import Sampler
from ddpm.samplers.generate import balanced_labels, generate, label_rows, sample_images
from ddpm.training import posthoc_ema
from ddpm.training.settings import TrainerSettings
from ddpm.training.state import TrainState

log = logging.getLogger("ddpm")
QUALITY_KEYS = ("fid", "kid", "precision", "recall", "class_entropy_norm", "confident_share")


class RunOutputs:
    """Writes into ``run_dir``: ``checkpoints/``, ``samples/`` and the tracker's logs."""

    def __init__(
        self,
        run_dir: Path,
        state: TrainState,
        sampler: Sampler,
        settings: TrainerSettings,
        tracker: Tracker,
        device: torch.device,
        record: dict[str, Any],
        quality: tuple[Any, Any] | None = None,
    ) -> None:
        """``record``: the resolved run config, stored in each checkpoint so the run can be
        rebuilt from it. ``quality``: the (evaluator, reference) that ``trainer.eval_every``
        measures with, in the process that measures (rank 0), else None."""
        self.run_dir, self.state, self.sampler, self.settings = run_dir, state, sampler, settings
        self.tracker, self.device, self.record = tracker, device, record
        self.last_checkpoint = run_dir / "checkpoints" / "last.pt"
        self.quality = quality

    def log_row(
        self, epoch: int, total: int, grad_norm: torch.Tensor, quiet: bool
    ) -> dict[str, float]:
        """One metrics row from the loss window (read first), logged, kept in the history;
        also a log line unless ``quiet`` (a progress bar shows it)."""
        state, window = self.state, self.state.window
        row = {
            "epoch": epoch,
            "loss": window.mean(),
            "lr": state.optimizer.param_groups[0]["lr"],
            "grad_norm": float(grad_norm),
            "images_per_s": window.images / max(window.seconds, 1e-9),
        }
        self.tracker.log(row, state.step)
        state.history.append([state.step, row["loss"]])
        if not quiet:
            log.info(
                "step %d/%d (epoch %d): loss %.4f, %.0f images/s",
                state.step,
                total,
                epoch,
                row["loss"],
                row["images_per_s"],
            )
        window.clear()
        return row

    def finish(self, wall_time_s: float) -> dict[str, Any]:
        """The run's summary (and, when measured during training, its final quality)."""
        state, history = self.state, self.state.history
        summary = {
            "final_loss": history[-1][1] if history else float("nan"),
            "steps": state.step,  # fewer than planned when the time budget ran out
            "epochs": state.epoch + 1,
            "wall_time_s": wall_time_s,
            "train_time_s": state.train_time_s,
            "images_per_s": state.images_seen / max(state.train_time_s, 1e-9),
            "num_parameters": sum(p.numel() for p in state.model.parameters()),
        }
        if self.quality is not None:
            summary.update(self.evaluate())
        self.tracker.summary(summary)
        return summary

    def checkpoint(self, keep: bool) -> Path:
        """Writes last.pt (and, when ``keep``, step_<n>.pt; only the newest keep_last stay)."""
        step = self.state.step
        state = {**self.state.state_dict(), "config": self.record}
        state[checkpoint.RUN_ID] = self.tracker.run_id
        folder = self.last_checkpoint.parent
        if keep:
            checkpoint.save(state, folder / f"step_{step:07d}.pt")
            if self.settings.keep_last:
                for old in sorted(folder.glob("step_*.pt"))[: -self.settings.keep_last]:
                    old.unlink()
        path = checkpoint.save(state, self.last_checkpoint)
        log.info("checkpoint at step %d: %s", step, path)
        self.tracker.log_checkpoint(path, step)
        return path

    def ema_profiles(self) -> list[Path]:
        """A snapshot of each post-hoc EMA profile, ``ema_profiles/<std>_<step>.pt``, from
        which ``posthoc_ema=<sigma_rel>`` rebuilds any EMA length (never from weights a NaN
        touched: the losses are read first)."""
        self.state.read_losses(self.last_checkpoint)
        folder = self.run_dir / posthoc_ema.FOLDER
        paths = [posthoc_ema.save_snapshot(p, folder) for p in self.state.posthoc_ema]
        log.info("post-hoc EMA snapshots at step %d: %s", self.state.step, folder)
        return paths

    def sampler_for(self, model: torch.nn.Module) -> Sampler:
        """The run's sampler for these weights (``sampler.plan=auto``: on the plan fitted to
        them, cached in ``<run>/plans/``)."""
        return auto_plan.resolve(self.sampler, model, self.run_dir / "plans", self.device)

    def grid(self, record: list[int] | None = None) -> dict[int, torch.Tensor]:
        """``num_samples`` images; a conditional run draws a 10x10 grid, one row per class."""
        model, step = self.state.shown, self.state.step
        classes = getattr(model, "num_classes", None)
        rows = label_rows(classes, 10) if classes is not None else None
        num = self.settings.num_samples if rows is None else len(rows)
        samples, trajectory = generate(
            model,
            self.sampler_for(model),
            num,
            self.settings.seed,
            self.device,
            record,
            labels=rows,
        )
        path = viz.save_grid(
            samples,
            self.run_dir / "samples" / f"grid_{step:07d}.png",
            nrow=8 if rows is None else 10,
        )
        self.tracker.log_image("samples/grid", path, step, caption=f"step {step}")
        return trajectory

    def final_pictures(self) -> None:
        """The last grid, one image's reverse process, and the loss curve."""
        steps = viz.progress_steps(len(self.sampler.schedule))
        log.info(
            "final grid: %d images with %s (%s network calls each)",
            self.settings.num_samples,
            type(self.sampler).__name__,
            "adaptive" if self.sampler.nfe is None else f"{self.sampler.nfe:g}",
        )
        strip = viz.save_progress(
            self.grid(record=steps), self.run_dir / "samples" / "progress.png"
        )
        self.tracker.log_image("samples/progress", strip, self.state.step)
        history = self.state.history
        viz.plot_loss([s for s, _ in history], [v for _, v in history], self.run_dir / "loss.png")

    def evaluate(self) -> dict[str, float]:
        """FID and friends of ``eval_samples`` fresh samples on the dataset's cached evaluator."""
        from ddpm.evaluate.metrics import evaluate_images

        evaluator, reference = self.quality
        model, seed, num = self.state.shown, self.settings.seed, self.settings.eval_samples
        labels = balanced_labels(model, num)
        images = sample_images(
            model, self.sampler_for(model), num, 500, seed + 1, self.device, labels=labels
        )
        metrics = evaluate_images(images, evaluator, reference, seed=seed, labels=labels)
        keys = (*QUALITY_KEYS, "label_accuracy") if labels is not None else QUALITY_KEYS
        result = {k: float(metrics[k]) for k in keys}
        self.tracker.log(result, self.state.step)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items())
        log.info("step %d: %s", self.state.step, shown)
        return result
