"""Tasks a run can perform (`task=NAME`): each builds its parts from the config, runs, and returns
the number a sweep optimizes."""
