"""``python -m ddpm.evaluate run_dir=<run> [sampler=ddim sampler.steps=50] [num_samples=N]``.

The Hydra entry lives here, in the file Python runs, so ``config_path`` resolves against this
file (``conf/`` of the checkout); the work is :func:`ddpm.evaluate.command.evaluate_run`.
"""

import hydra
from omegaconf import DictConfig

from ddpm.errors import one_line_errors
from ddpm.evaluate.command import evaluate_run
from ddpm.sample import sampler_choice


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    evaluate_run(cfg, sampler_choice())


if __name__ == "__main__":
    main()
