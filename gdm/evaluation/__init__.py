"""Evaluation with one owner: `Evaluator` decides when to evaluate, runs the metrics (plain objects in
`gdm.metrics` over one shared feature pass), logs them on the run's one step axis with their protocol,
saves the grids, keeps best and final, and writes summary.json / eval.json and the checkpoints."""
