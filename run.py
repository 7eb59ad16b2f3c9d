"""gdm entry point: `python run.py [group=option ...] [key=value ...]`; `--help` lists the options."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from gdm.app import main as run  # imported here so `--help` and `--cfg` answer fast

    return run(cfg)


if __name__ == "__main__":
    main()
