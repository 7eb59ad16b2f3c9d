"""gdm's Hydra sweeper on current Optuna (`hydra/sweeper=optuna`, conf/hydra/sweeper/optuna.yaml)."""
