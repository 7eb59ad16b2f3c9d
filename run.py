"""gdm entry point: `python run.py [group=option ...] [key=value ...]`; `--help` lists the options."""

import sys
import warnings

import hydra
from omegaconf import DictConfig

# conf/hydra/launcher/submitit_slurm.yaml refines the submitit plugin's config of the same name, which Hydra 1.3
# (pinned) validates against the plugin's schema, warning that this matching is deprecated.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
# A latent diffusion / flow model's autoencoder is frozen in eval mode by design (gdm.models.latent), which
# Lightning reports at the start of every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from gdm.app import main as run  # imported here so `--help` and `--cfg` answer fast

    return run(cfg)


if __name__ == "__main__":
    from gdm.command_line import checkpoint_task_deletion, checkpoint_task_overrides, renamed_option  # no torch

    # before Hydra answers "not in struct" / "does not exist"
    if (refused := renamed_option(sys.argv[1:]) or checkpoint_task_deletion(sys.argv[1:])) is not None:
        print(refused, file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = checkpoint_task_overrides(sys.argv[1:])
    main()
