"""The test likelihood of an EDM checkpoint with its probability-flow ODE solved in sigma (EDM's dx/dsigma) and in
ln sigma (gdm's dx/d ln sigma, the same density): bits per dimension, seconds and net calls on 64 digits.

    python experiments/nll_ode_time.py RUN/checkpoints/last.ckpt --tolerance 1e-3 [--c-noise-scale 250] \
        [--probe-seeds 2 3 4] [--ode-time ln_sigma sigma]

The 64 images are a fixed draw of the embedded digits, dequantized as the test step does; each probe seed draws
Hutchinson's probes anew (the estimator's spread). `--c-noise-scale` overrides the checkpoint's (for a checkpoint
written before the option by a scratch edit).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from gdm.checkpoints import load_model
from gdm.data.digits import load_digit_images
from gdm.likelihoods import pixel_levels
from gdm.models.iterative import ProbabilityFlow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--c-noise-scale", type=float, default=None)
    parser.add_argument("--probe-seeds", type=int, nargs="+", default=[2])
    parser.add_argument("--ode-time", nargs="+", choices=("ln_sigma", "sigma"), default=["ln_sigma", "sigma"])
    args = parser.parse_args()
    model = load_model(args.checkpoint)
    model.nll_tolerance = args.tolerance
    if args.c_noise_scale is not None:
        model.edm.c_noise_scale = args.c_noise_scale
    images, _ = load_digit_images(model.hparams.image_shape[-1])
    x = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:64]]
    y = (pixel_levels(x) + torch.rand(x.shape, generator=torch.Generator().manual_seed(1))) / 256
    d = x[0].numel()
    ln_sigma = model.probability_flow

    def sigma(net, labels):  # EDM's own time variable
        def velocity(s, z):
            return (z - model.edm.denoise(lambda y, c: model.predict(net, y, c, labels), z, s)) / s
        edm = model.edm
        return ProbabilityFlow(velocity, edm.sigma_min, edm.sigma_max, edm.sigma_max, "sigma")

    calls = [0]
    model.net_ema.module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    for name in args.ode_time:
        model.probability_flow = ln_sigma if name == "ln_sigma" else sigma
        for probe_seed in args.probe_seeds:
            calls[0] = 0
            start = time.perf_counter()
            ll = model.log_likelihood(2 * y - 1, generator=torch.Generator().manual_seed(probe_seed))
            seconds = time.perf_counter() - start
            nll = -(ll + d * math.log(2)) + d * math.log(256)
            print(f"ODE in {name}, tolerance {args.tolerance:g}, probe seed {probe_seed}: "
                  f"{float(nll.mean()) / (d * math.log(2)):.4f} bits/dim, {seconds:.1f} s, {calls[0]} net calls")


if __name__ == "__main__":
    main()
