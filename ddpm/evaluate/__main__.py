"""``python -m ddpm.evaluate run_dir=<run> [sampler=ddim sampler.steps=50] [num_samples=N]``.

The Hydra entry lives here, in the file Python runs, so ``config_path`` resolves against this
file (``conf/`` of the checkout); the work is :func:`ddpm.evaluate.command.evaluate_run`.
"""

import sys

import hydra
from omegaconf import DictConfig

from ddpm.errors import UserError
from ddpm.evaluate.command import evaluate_run
from ddpm.sample import sampler_choice


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate_run(cfg, sampler_choice())
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
