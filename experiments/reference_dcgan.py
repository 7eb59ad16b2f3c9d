"""A re-implementation of the PyTorch DCGAN example's training loop (pytorch/examples dcgan/main.py), the
reference that bench_gan_throughput.py measures gdm against.

Its own nets (Sigmoid at the end of D) and weights_init, nn.BCELoss with labels 1 / 0, D updated from
errD_real.backward() + errD_fake.backward() on netD(fake.detach()), G from netD(fake) with label 1, D's weights
still requiring grad during the G step, unfused Adam(2e-4, (0.5, 0.999)), and .item() on D(x), D(G(z)) x 2,
errD and errG every iteration (the example prints them; here the line is formatted and only printed with
--verbose). The every-100-iterations image dump and per-epoch checkpoints are left out. 64x64 RGB only.
"""

from __future__ import annotations

import sys

import torch
from bench_harness import time_loop
from torch import nn

NC = 3


def reference_weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class ReferenceGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # 4x4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 32x32
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, NC, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ReferenceDiscriminator(nn.Module):
    def __init__(self, ndf: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(NC, ndf, 4, 2, 1, bias=False),  # 32x32
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),  # 4x4
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def run_reference(args, loader, device: torch.device) -> list[float]:
    if args.image_size != 64:
        raise SystemExit("the reference DCGAN nets are fixed at 64x64: use --image-size 64")
    nz, lr, beta1 = args.nz, 2e-4, 0.5
    netG = ReferenceGenerator(nz, args.ngf).to(device)
    netG.apply(reference_weights_init)
    netD = ReferenceDiscriminator(args.ndf).to(device)
    netD.apply(reference_weights_init)
    criterion = nn.BCELoss()
    real_label, fake_label = 1, 0
    optimizerD = torch.optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))

    def step(i: int, data: dict) -> None:
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real_cpu = data["image"].to(device)
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()

        noise = torch.randn(batch_size, nz, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()

        # (2) Update G: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()

        line = (f"[0/1][{i}/{len(loader)}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
                f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}")
        if getattr(args, "verbose", False):
            print(line, file=sys.stderr)

    return time_loop(loader, step, args.warmup, device)
