"""``python -m ddpm.evaluate.build`` (``ddpm-build-evaluator``): train the evaluator once and
write its cache (weights and test-split reference statistics), for every later evaluation."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ddpm.evaluate import cache
from ddpm.frontend.cli import hydra_command
from ddpm.hardware.devices import pick_device


def main(cfg: DictConfig) -> None:
    name = cfg.dataset.name
    cache.check_dataset(name)
    meta = cache.build(
        cache_dir=cfg.cache_dir,
        data_root=cfg.dataset.root,
        epochs=cfg.epochs,
        seed=cfg.seed,
        device=pick_device(cfg.device),
        download=cfg.download,
        limit=cfg.limit,
        dataset=name,
        options={"checksums": cfg.dataset.checksums} if name == "cifar10" else None,
        arch={k: v for k, v in OmegaConf.to_container(cfg.arch).items() if v is not None},
    )
    print(
        f"evaluator ({name}): test accuracy {meta['test_accuracy']:.4f}, trained in "
        f"{meta['train_seconds'] / 60:.1f} min -> {cache.resolve_dir(cfg.cache_dir, name)}"
    )


cli = hydra_command("ddpm-build-evaluator", __doc__, "evaluator", main)

if __name__ == "__main__":
    cli()
