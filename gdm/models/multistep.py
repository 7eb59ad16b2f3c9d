"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"),
by diffusers' UniPCMultistepScheduler, on the rectified-flow path x = (1 - s) x_0 + s n (s = 1: noise, 0: data), for
flows and for EDM.

EDM's probability-flow ODE is this path's ODE up to a change of variables: x_flow = x_edm / (1 + sigma) with
s = sigma / (1 + sigma) (both have the data prediction D and log-SNR lambda = -ln sigma), so one solver in
diffusers' "flow_prediction" convention (the net's output read as noise - data) serves both families, on each
family's own noise grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# UniPC's settings, diffusers' defaults (Zhao et al. 2023's UniPC-2 with the B(h) = e^h - 1 corrector), recorded in
# each sample metric's protocol (`unipc_protocol`).
SOLVER_ORDER, SOLVER_TYPE = 2, "bh2"


def unipc_protocol() -> dict:
    """The settings of UniPC fixed here, for a sample metric's protocol."""
    return {"solver_order": SOLVER_ORDER, "solver_type": SOLVER_TYPE}


def unipc(flow_prediction: Callable[[Tensor, Tensor], Tensor], x: Tensor, s: Tensor) -> Tensor:
    """Integrate from `x` (N, ...) at path position s[0] to the data at s = 0 on the grid `s` (steps,) (decreasing
    in (0, 1], without the final 0), one call of `flow_prediction(x, s)` -> noise - data (N, ...) per step
    (NFE = steps). UniPC of the data prediction, second order with the bh2 corrector (diffusers' defaults), first
    order on the last step."""
    from diffusers import UniPCMultistepScheduler  # a heavy import: only when this sampler is used

    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=1.0, prediction_type="flow_prediction",
                                        solver_order=SOLVER_ORDER, solver_type=SOLVER_TYPE,
                                        final_sigmas_type="zero")
    scheduler.set_timesteps(sigmas=s.double().cpu().numpy(), device=x.device)
    # Step through the grid in order: diffusers would find the first step by its integer timestep, 1000 s rounded,
    # which two grid points share from about 1,000 steps on (and then it starts one step late and runs off the end).
    scheduler.set_begin_index(0)
    for t, sigma in zip(scheduler.timesteps, scheduler.sigmas[:-1], strict=True):
        x = scheduler.step(flow_prediction(x, sigma.to(x.device, torch.float32)), t, x).prev_sample
    return x
