"""``python -m ddpm.evaluate run_dir=<run> [sampler=ddim sampler.steps=50] [num_samples=N]``.

The work is :func:`ddpm.evaluate.command.evaluate_run`; this is its console entry.
"""

from ddpm.evaluate.command import cli

if __name__ == "__main__":
    cli()
