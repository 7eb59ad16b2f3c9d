"""CycleGAN training throughput: gdm's CycleGAN (through a real Lightning Trainer) vs the reference code.

Recipe (the paper's and pytorch-CycleGAN-and-pix2pix's defaults): batch 1 (one A and one B image per
step), 3-channel images of --image-size px (default 128), ResNet generators with ngf = 64 and 6 residual
blocks at 128 px or below, 9 above (gdm.nets.cyclegan.default_blocks), 70x70 PatchGAN discriminators with
ndf = 64, instance norm without affine parameters, least-squares GAN loss, cycle lambda 10 for both
directions, identity weight 0.5, pools of 50 past fakes, Adam lr 2e-4, betas (0.5, 0.999). Data: random
images in [-1, 1), pre-generated in memory (a small fixed pool cycled by a Dataset returning
{"image_a", "image_b"} of the final size), so loading costs ~nothing; every variant gets the same loader.

Variants (each runs in its own subprocess, so peak RSS and thread state are per variant):

  reference                 a re-implementation of pytorch-CycleGAN-and-pix2pix's training step
                            (models/cycle_gan_model.py optimize_parameters, models/networks.py,
                            util/image_pool.py) with its own net classes: ResnetGenerator of
                            nn.ReflectionPad2d / Conv2d / norm layers, ResnetBlock with `conv_block` and
                            `out = x + self.conv_block(x)`, NLayerDiscriminator, the norm a functools.partial
                            of InstanceNorm2d(affine=False, track_running_stats=False) and hence use_bias =
                            True, init_weights normal(0, 0.02); GANLoss('lsgan') = nn.MSELoss against
                            `real_label.expand_as(prediction)`; ImagePool with a python list and
                            random.uniform / random.randint. Per step: set_input (.to(device)); forward()
                            fake_B = G_A(real_A), rec_A = G_B(fake_B), fake_A = G_B(real_B), rec_B =
                            G_A(fake_A); set_requires_grad([D_A, D_B], False); optimizer_G.zero_grad();
                            backward_G (idt_A = G_A(real_B), idt_B = G_B(real_A) as separate calls, GAN losses
                            D_A(fake_B) and D_B(fake_A) vs True, cycle L1 x lambda, sum, backward);
                            optimizer_G.step(); set_requires_grad([D_A, D_B], True); optimizer_D.zero_grad();
                            backward_D_A (fake_B_pool.query(fake_B); 0.5 (crit(D(real), True) +
                            crit(D(fake.detach()), False)); backward) and backward_D_B likewise (two
                            backwards); optimizer_D.step(). torch.optim.Adam with default settings (no fused
                            flag), fp32 always (the reference has no AMP). On CUDA, as its init_net does, each
                            net is wrapped in nn.DataParallel(net, [0]) and, as its BaseModel does,
                            torch.backends.cudnn.benchmark = True. The get_current_losses() reads every
                            print_freq (100) iterations, visdom / HTML displays and checkpoints are left out.
  gdm                       gdm.models.cyclegan.CycleGAN with gdm's nets (ResnetGenerator, PatchDiscriminator)
                            and channels_last=False, trained by lightning.Trainer (logger=False, no checkpoints,
                            no progress bar; --precision, e.g. bf16-mixed). Its step: each generator runs its
                            translation and identity inputs as one batch of 2 (`_fused`), likewise each D its
                            real and pooled fake, D frozen by toggled_optimizer during the G update, one
                            backward for both Ds, fused Adam, self.log_dict of 10 detached values.
  gdm-channels_last         the same with channels_last=True (gdm's default in conf/model/cyclegan.yaml).
  plain-loop                exactly gdm's update (the module's own nets, `_fused`, `_d_loss`, criterion, pools
                            and the fused Adams of its configure_optimizers()) in a bare PyTorch loop:
                            training_step written out without self.log, requires_grad_(False) on both Ds
                            during the G update instead of toggled_optimizer, the whole step under
                            torch.autocast(bf16, cache_enabled=False) when --precision bf16-mixed (as
                            Lightning's plugin wraps training_step). The framework-free baseline for `gdm`:
                            the target is Lightning within 5% of it (bit-identical weights after training,
                            checked at 32-true and bf16-mixed on the CPU).
  plain-loop-channels_last  the same in channels_last: the baseline for `gdm-channels_last`.

A "step" is one batch = one A and one B image = one G update (both generators) and one D update (both
discriminators); Lightning's global_step counts 2 per batch, so batches are counted. Steps/s = timed steps /
wall seconds over the steps after the --warmup ones; images/s = 2 x batch x steps/s (A and B images); the
median single-step time is shown beside it, as a check on a machine shared with other work. On CUDA each
step's end is timed after torch.cuda.synchronize(). The generator / discriminator parameter counts of the
reference nets and gdm's are printed and asserted equal (a check that the re-implementation is the same
net). The "weights" column is the memory layout the nets' 4-d weights were in after training (NHWC = all
channels_last), a check that channels_last=True converted the nets and not only the inputs.

    .venv/bin/python experiments/bench_cyclegan_throughput.py --steps 30 --warmup 3 --repeats 3
    .venv/bin/python experiments/bench_cyclegan_throughput.py --device cuda --image-size 256 \\
        --steps 200 --warmup 20 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import platform
import random
import resource
import statistics
import sys
import time
import warnings

import torch
from bench_harness import RESULT_TAG, default_threads, run_variant
from torch import nn
from torch.nn import init
from torch.utils.data import DataLoader, Dataset

VARIANTS = ["reference", "gdm", "gdm-channels_last", "plain-loop", "plain-loop-channels_last"]
DEFAULT_VARIANTS = VARIANTS
BASELINE = {"gdm": "plain-loop", "gdm-channels_last": "plain-loop-channels_last"}
NC = 3


def n_blocks(args: argparse.Namespace) -> int:
    from gdm.nets.cyclegan import default_blocks

    return default_blocks(args.image_size) if args.n_blocks is None else args.n_blocks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_params(*nets: nn.Module) -> int:
    return sum(p.numel() for net in nets for p in net.parameters())


def weights_layout(*nets: nn.Module) -> str:
    """NHWC when every 4-d weight of the nets is channels_last in memory, else NCHW."""
    w = [p for net in nets for p in net.parameters() if p.dim() == 4]
    return "NHWC" if all(p.is_contiguous(memory_format=torch.channels_last) for p in w) else "NCHW"


# ---- data ---------------------------------------------------------------------------------------


class RandomPairs(Dataset):
    """`length` samples {"image_a": a, "image_b": b}, uniform in [-1, 1), cycled from small fixed pools.

    The pools keep memory flat whatever the number of steps; every variant gets the same loader.
    """

    def __init__(self, length: int, image_size: int, pool_size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.rand(pool_size, NC, image_size, image_size, generator=g) * 2 - 1
        self.b = torch.rand(pool_size, NC, image_size, image_size, generator=g) * 2 - 1
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image_a": self.a[i % len(self.a)], "image_b": self.b[i % len(self.b)]}


def make_loader(args: argparse.Namespace) -> DataLoader:
    n_batches = args.warmup + args.steps
    dataset = RandomPairs(n_batches * args.batch_size, args.image_size, pool_size=4 * args.batch_size,
                          seed=args.seed)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=0, drop_last=True)


# ---- (a) pytorch-CycleGAN-and-pix2pix ---------------------------------------------------------------


def reference_init_weights(net: nn.Module, init_gain: float = 0.02) -> None:
    def init_func(m: nn.Module) -> None:
        classname = m.__class__.__name__
        if hasattr(m, "weight") and (classname.find("Conv") != -1 or classname.find("Linear") != -1):
            init.normal_(m.weight.data, 0.0, init_gain)
            if hasattr(m, "bias") and m.bias is not None:
                init.constant_(m.bias.data, 0.0)
        elif classname.find("BatchNorm2d") != -1:
            init.normal_(m.weight.data, 1.0, init_gain)
            init.constant_(m.bias.data, 0.0)

    net.apply(init_func)


def reference_norm_layer():
    return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


class ReferenceResnetBlock(nn.Module):
    def __init__(self, dim: int, norm_layer, use_dropout: bool, use_bias: bool):
        super().__init__()
        self.conv_block = self.build_conv_block(dim, norm_layer, use_dropout, use_bias)

    def build_conv_block(self, dim, norm_layer, use_dropout, use_bias):  # padding_type='reflect'
        conv_block = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
                      norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            conv_block += [nn.Dropout(0.5)]
        conv_block += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
                       norm_layer(dim)]
        return nn.Sequential(*conv_block)

    def forward(self, x):
        out = x + self.conv_block(x)  # add skip connections
        return out


class ReferenceResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6):
        assert n_blocks >= 0
        super().__init__()
        if type(norm_layer) is functools.partial:
            use_bias = norm_layer.func == nn.InstanceNorm2d
        else:
            use_bias = norm_layer == nn.InstanceNorm2d

        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                 norm_layer(ngf), nn.ReLU(True)]
        n_downsampling = 2
        for i in range(n_downsampling):  # add downsampling layers
            mult = 2**i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        mult = 2**n_downsampling
        for _ in range(n_blocks):  # add ResNet blocks
            model += [ReferenceResnetBlock(ngf * mult, norm_layer=norm_layer, use_dropout=use_dropout,
                                           use_bias=use_bias)]
        for i in range(n_downsampling):  # add upsampling layers
            mult = 2 ** (n_downsampling - i)
            model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1,
                                         output_padding=1, bias=use_bias),
                      norm_layer(int(ngf * mult / 2)), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3)]
        model += [nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
        model += [nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, input):
        return self.model(input)


class ReferenceNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
        super().__init__()
        if type(norm_layer) is functools.partial:
            use_bias = norm_layer.func == nn.InstanceNorm2d
        else:
            use_bias = norm_layer == nn.InstanceNorm2d
        kw, padw = 4, 1
        sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):  # gradually increase the number of filters
            nf_mult_prev = nf_mult
            nf_mult = min(2**n, 8)
            sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw,
                                   bias=use_bias),
                         norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        nf_mult_prev = nf_mult
        nf_mult = min(2**n_layers, 8)
        sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw,
                               bias=use_bias),
                     norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]  # 1-channel prediction map
        self.model = nn.Sequential(*sequence)

    def forward(self, input):
        return self.model(input)


class ReferenceGANLoss(nn.Module):
    def __init__(self, gan_mode="lsgan", target_real_label=1.0, target_fake_label=0.0):
        super().__init__()
        self.register_buffer("real_label", torch.tensor(target_real_label))
        self.register_buffer("fake_label", torch.tensor(target_fake_label))
        self.gan_mode = gan_mode
        if gan_mode == "lsgan":
            self.loss = nn.MSELoss()
        else:
            raise NotImplementedError(f"gan mode {gan_mode} not implemented here")

    def get_target_tensor(self, prediction, target_is_real):
        target_tensor = self.real_label if target_is_real else self.fake_label
        return target_tensor.expand_as(prediction)

    def __call__(self, prediction, target_is_real):
        target_tensor = self.get_target_tensor(prediction, target_is_real)
        return self.loss(prediction, target_tensor)


class ReferenceImagePool:
    def __init__(self, pool_size):
        self.pool_size = pool_size
        if self.pool_size > 0:  # create an empty pool
            self.num_imgs = 0
            self.images = []

    def query(self, images):
        if self.pool_size == 0:  # if the buffer size is 0, do nothing
            return images
        return_images = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if self.num_imgs < self.pool_size:  # if the buffer is not full; keep inserting current images
                self.num_imgs = self.num_imgs + 1
                self.images.append(image)
                return_images.append(image)
            else:
                p = random.uniform(0, 1)
                if p > 0.5:  # by 50% chance, return a previously stored image and insert the current one
                    random_id = random.randint(0, self.pool_size - 1)  # randint is inclusive
                    tmp = self.images[random_id].clone()
                    self.images[random_id] = image
                    return_images.append(tmp)
                else:  # by another 50% chance, the buffer will return the current image
                    return_images.append(image)
        return_images = torch.cat(return_images, 0)  # collect all the images and return
        return return_images


def reference_nets(args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    norm = reference_norm_layer()
    return (ReferenceResnetGenerator(NC, NC, args.ngf, norm_layer=norm, use_dropout=False, n_blocks=n_blocks(args)),
            ReferenceNLayerDiscriminator(NC, args.ndf, n_layers=3, norm_layer=norm))


class ReferenceCycleGANModel:
    """models/cycle_gan_model.py's training side, lambda_A = lambda_B = 10, lambda_identity = 0.5."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # BaseModel.__init__ (preprocess != 'scale_width')
        self.lambda_A = self.lambda_B = 10.0
        self.lambda_identity = 0.5

        def init_net(net: nn.Module) -> nn.Module:
            if device.type == "cuda":  # gpu_ids = [0]
                net.to(device)
                net = torch.nn.DataParallel(net, [device.index or 0])
            reference_init_weights(net, 0.02)
            return net

        g_a, d_a = reference_nets(args)
        g_b, d_b = reference_nets(args)
        self.netG_A, self.netG_B = init_net(g_a), init_net(g_b)
        self.netD_A, self.netD_B = init_net(d_a), init_net(d_b)
        self.fake_A_pool = ReferenceImagePool(args.pool_size)
        self.fake_B_pool = ReferenceImagePool(args.pool_size)
        self.criterionGAN = ReferenceGANLoss("lsgan").to(device)
        self.criterionCycle = torch.nn.L1Loss()
        self.criterionIdt = torch.nn.L1Loss()
        lr, beta1 = 2e-4, 0.5
        self.optimizer_G = torch.optim.Adam(
            [*self.netG_A.parameters(), *self.netG_B.parameters()], lr=lr, betas=(beta1, 0.999))
        self.optimizer_D = torch.optim.Adam(
            [*self.netD_A.parameters(), *self.netD_B.parameters()], lr=lr, betas=(beta1, 0.999))

    def set_input(self, input):  # direction AtoB
        self.real_A = input["image_a"].to(self.device)
        self.real_B = input["image_b"].to(self.device)

    def forward(self):
        self.fake_B = self.netG_A(self.real_A)  # G_A(A)
        self.rec_A = self.netG_B(self.fake_B)  # G_B(G_A(A))
        self.fake_A = self.netG_B(self.real_B)  # G_B(B)
        self.rec_B = self.netG_A(self.fake_A)  # G_A(G_B(B))

    def backward_D_basic(self, netD, real, fake):
        pred_real = netD(real)
        loss_D_real = self.criterionGAN(pred_real, True)
        pred_fake = netD(fake.detach())
        loss_D_fake = self.criterionGAN(pred_fake, False)
        loss_D = (loss_D_real + loss_D_fake) * 0.5
        loss_D.backward()
        return loss_D

    def backward_D_A(self):
        fake_B = self.fake_B_pool.query(self.fake_B)
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B, fake_B)

    def backward_D_B(self):
        fake_A = self.fake_A_pool.query(self.fake_A)
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A, fake_A)

    def backward_G(self):
        lambda_idt, lambda_A, lambda_B = self.lambda_identity, self.lambda_A, self.lambda_B
        if lambda_idt > 0:
            self.idt_A = self.netG_A(self.real_B)
            self.loss_idt_A = self.criterionIdt(self.idt_A, self.real_B) * lambda_B * lambda_idt
            self.idt_B = self.netG_B(self.real_A)
            self.loss_idt_B = self.criterionIdt(self.idt_B, self.real_A) * lambda_A * lambda_idt
        else:
            self.loss_idt_A = 0
            self.loss_idt_B = 0
        self.loss_G_A = self.criterionGAN(self.netD_A(self.fake_B), True)
        self.loss_G_B = self.criterionGAN(self.netD_B(self.fake_A), True)
        self.loss_cycle_A = self.criterionCycle(self.rec_A, self.real_A) * lambda_A
        self.loss_cycle_B = self.criterionCycle(self.rec_B, self.real_B) * lambda_B
        self.loss_G = (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
                       + self.loss_idt_A + self.loss_idt_B)
        self.loss_G.backward()

    def set_requires_grad(self, nets, requires_grad=False):
        if not isinstance(nets, list):
            nets = [nets]
        for net in nets:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad

    def optimize_parameters(self):
        self.forward()
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.optimizer_G.step()
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.backward_D_A()
        self.backward_D_B()
        self.optimizer_D.step()


def run_reference(args: argparse.Namespace, device: torch.device) -> tuple[list[float], dict[str, int]]:
    random.seed(args.seed)
    model = ReferenceCycleGANModel(args, device)
    params = {"g": count_params(model.netG_A), "d": count_params(model.netD_A),
              "layout": weights_layout(model.netG_A, model.netG_B, model.netD_A, model.netD_B)}
    loader = make_loader(args)

    marks: list[float] = []  # start of the first timed step, then the end of each timed step
    for i, data in enumerate(loader):
        if i == args.warmup:
            sync(device)
            marks.append(time.perf_counter())
        model.set_input(data)
        model.optimize_parameters()
        if i >= args.warmup:
            sync(device)
            marks.append(time.perf_counter())
    return marks, params


# ---- (b, c) gdm's CycleGAN through lightning.Trainer ------------------------------------------------


def gdm_model(args: argparse.Namespace, channels_last: bool):
    from gdm.models.cyclegan import CycleGAN
    from gdm.nets.cyclegan import PatchDiscriminator, ResnetGenerator

    return CycleGAN(
        image_shape=(NC, args.image_size, args.image_size),
        generator=functools.partial(ResnetGenerator, ngf=args.ngf, n_blocks=n_blocks(args), norm="instance"),
        discriminator=functools.partial(PatchDiscriminator, ndf=args.ndf, n_layers=3, norm="instance"),
        loss="lsgan", lambda_a=10.0, lambda_b=10.0, lambda_identity=0.5, pool_size=args.pool_size,
        lr=2e-4, betas=(0.5, 0.999), channels_last=channels_last,
    )


def gdm_params(model) -> dict:
    return {"g": count_params(model.g_ab), "d": count_params(model.d_a),
            "layout": weights_layout(model.g_ab, model.g_ba, model.d_a, model.d_b)}


def run_gdm(args: argparse.Namespace, device: torch.device, channels_last: bool) -> tuple[list[float], dict]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    # Lightning sets its own logger's level when imported: quieten the accelerator lines and tips after that.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    class StepTimer(Callback):
        """Times batches warmup .. warmup+steps-1: from the start of the first to the end of the last."""

        def __init__(self, warmup: int):
            self.warmup = warmup
            self.marks: list[float] = []  # start of batch `warmup`, then the end of each timed batch
            self.batches = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == self.warmup:
                sync(device)
                self.marks.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batches += 1
            if batch_idx >= self.warmup:
                sync(device)
                self.marks.append(time.perf_counter())

    model = gdm_model(args, channels_last)
    timer = StepTimer(args.warmup)
    n_batches = args.warmup + args.steps
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", precision=args.precision,
        devices=[device.index] if device.type == "cuda" else 1,
        max_steps=2 * n_batches + 10, max_epochs=1, limit_train_batches=n_batches,  # global_step: 2 per batch
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=args.log_every,
        benchmark=True if args.cudnn_benchmark else None, callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=make_loader(args))
    params = gdm_params(model)  # the layout the nets trained in
    if timer.batches != n_batches or trainer.global_step != 2 * n_batches:
        raise SystemExit(f"the trainer ran {timer.batches} batches to global_step {trainer.global_step}, "
                         f"expected {n_batches} and {2 * n_batches}")
    return timer.marks, params


# ---- (d) gdm's update in a plain loop ------------------------------------------------------------


def run_plain(args: argparse.Namespace, device: torch.device, channels_last: bool) -> tuple[list[float], dict]:
    import torch.nn.functional as F

    if device.type == "cuda" and args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    model = gdm_model(args, channels_last)
    model.to(device)  # what Lightning's strategy does (model_to_device), return value unused
    model.train()
    params = gdm_params(model)
    (opt_g, opt_d), _ = model.configure_optimizers()  # fused Adam on CPU / CUDA; the lr schedules stay at 1
    hp, crit = model.hparams, model.criterion
    d_params = [*model.d_a.parameters(), *model.d_b.parameters()]
    identity = hp.lambda_identity > 0
    if args.precision == "bf16-mixed":
        # Lightning's MixedPrecision plugin: no weight-cast cache (its copies would go stale at opt_g.step()).
        autocast = functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16,
                                     cache_enabled=False)
    elif args.precision in ("32-true", "32"):
        autocast = contextlib.nullcontext
    else:
        raise SystemExit(f"the plain loop knows --precision 32-true and bf16-mixed, not {args.precision!r}")
    loader = make_loader(args)

    marks: list[float] = []  # start of the first timed step, then the end of each timed step
    for i, batch in enumerate(loader):
        if i == args.warmup:
            sync(device)
            marks.append(time.perf_counter())
        with autocast():  # CycleGAN.training_step, without self.log
            real_a = model._layout(batch["image_a"].to(device))
            real_b = model._layout(batch["image_b"].to(device))
            fake_b, *idt_b = model._fused(model.g_ab, real_a, *([real_b] if identity else []))
            fake_a, *idt_a = model._fused(model.g_ba, real_b, *([real_a] if identity else []))
            rec_a, rec_b = model.g_ba(fake_b), model.g_ab(fake_a)

            for p in d_params:  # what toggled_optimizer(opt_g) does to the parameters outside opt_g
                p.requires_grad_(False)
            adv_b = crit(model.d_b(fake_b), True)
            adv_a = crit(model.d_a(fake_a), True)
            cycle_a = F.l1_loss(rec_a, real_a)
            cycle_b = F.l1_loss(rec_b, real_b)
            g_loss = adv_a + adv_b + hp.lambda_a * cycle_a + hp.lambda_b * cycle_b
            if identity:
                idt_loss_a, idt_loss_b = F.l1_loss(idt_a[0], real_a), F.l1_loss(idt_b[0], real_b)
                g_loss = g_loss + hp.lambda_identity * (hp.lambda_a * idt_loss_a + hp.lambda_b * idt_loss_b)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            for p in d_params:
                p.requires_grad_(True)

            d_a_loss = model._d_loss(model.d_a, real_a, model.pool_a.query(fake_a.detach()))
            d_b_loss = model._d_loss(model.d_b, real_b, model.pool_b.query(fake_b.detach()))
            opt_d.zero_grad(set_to_none=True)
            (d_a_loss + d_b_loss).backward()
            opt_d.step()
        if i >= args.warmup:
            sync(device)
            marks.append(time.perf_counter())
    return marks, params


# ---- driver --------------------------------------------------------------------------------------


def run_one(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # Lightning's warnings (no val loader, few workers, pytree deprecations) are noise here.
    for pattern in (".*does not have many workers.*", ".*num_workers.*", ".*val_dataloader.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=pattern)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but torch.cuda.is_available() is False")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    v = args.only
    if v == "reference":
        marks, params = run_reference(args, device)
    elif v in ("gdm", "gdm-channels_last"):
        marks, params = run_gdm(args, device, channels_last=v.endswith("channels_last"))
    elif v in ("plain-loop", "plain-loop-channels_last"):
        marks, params = run_plain(args, device, channels_last=v.endswith("channels_last"))
    else:
        raise SystemExit(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    timed = len(marks) - 1
    if timed != args.steps:
        raise SystemExit(f"{v}: timed {timed} steps, expected {args.steps}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds = marks[-1] - marks[0]
    step_seconds = [b - a for a, b in zip(marks, marks[1:])]
    return {
        "variant": v, "seconds": seconds, "steps": timed, "steps_per_s": timed / seconds,
        "images_per_s": 2 * args.batch_size * timed / seconds,
        # robust to a neighbour stealing the cores for part of the run
        "median_step_s": statistics.median(step_seconds),
        "peak_rss_gib": peak_kib / 2**20, "threads": torch.get_num_threads(),
        "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "g_params": params["g"], "d_params": params["d"], "weights": params["layout"],
    }


def check_param_counts(args: argparse.Namespace) -> dict[str, int]:
    """The reference nets and gdm's must be the same nets: equal parameter counts (built on the meta device)."""
    from gdm.nets.cyclegan import PatchDiscriminator, ResnetGenerator

    shape = (NC, args.image_size, args.image_size)
    with torch.device("meta"):
        ref_g, ref_d = reference_nets(args)
        g = ResnetGenerator(shape, ngf=args.ngf, n_blocks=n_blocks(args), norm="instance")
        d = PatchDiscriminator(shape, ndf=args.ndf, n_layers=3, norm="instance")
    counts = {"g": count_params(g), "d": count_params(d)}
    ref = {"g": count_params(ref_g), "d": count_params(ref_d)}
    assert counts == ref, f"parameter counts differ: gdm {counts}, reference {ref}"
    return counts


def child_argv(args: argparse.Namespace, variant: str) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--only", variant,
            "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
            "--ngf", str(args.ngf), "--ndf", str(args.ndf), "--pool-size", str(args.pool_size),
            "--seed", str(args.seed), "--log-every", str(args.log_every), "--device", args.device,
            "--precision", args.precision]
    if args.n_blocks is not None:
        argv += ["--n-blocks", str(args.n_blocks)]
    return argv + (["--cudnn-benchmark"] if args.cudnn_benchmark else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=1, help="A images (and as many B images) per step")
    p.add_argument("--steps", type=int, default=30, help="timed steps (each: one G + one D update)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=default_threads(), help="torch.set_num_threads (default: cores)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--precision", default="32-true",
                   help="gdm / plain-loop: 32-true (default) or bf16-mixed (Lightning's plugin; torch.autocast "
                        "bf16 in the plain loop); the reference is always fp32")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="CUDA: cudnn.benchmark for gdm / plain-loop too (the reference always sets it)")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--n-blocks", type=int, default=None, help="residual blocks (default: 9 above 128 px, else 6)")
    p.add_argument("--pool-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50, help="Trainer log_every_n_steps")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the variant list this many times, interleaved; the table shows each variant's best "
                        "run (on a shared machine the best is the least disturbed)")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1 or args.batch_size < 1:
        p.error("--steps, --repeats and --batch-size must be >= 1 and --warmup >= 0")
    if args.precision not in ("32-true", "32", "bf16-mixed"):
        p.error(f"--precision {args.precision!r}: use 32-true or bf16-mixed")

    if args.only:
        print(RESULT_TAG + json.dumps(run_one(args)), flush=True)
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    import lightning

    counts = check_param_counts(args)
    cuda = args.device.startswith("cuda")
    hw = (torch.cuda.get_device_name(args.device) if cuda and torch.cuda.is_available()
          else f"{platform.machine()} cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"torch {torch.__version__} | lightning {lightning.__version__} | python {platform.python_version()} "
          f"| {args.device}: {hw}")
    print(f"cores {default_threads()} | torch threads {args.threads} | image {args.image_size}px | batch "
          f"{args.batch_size} (A) + {args.batch_size} (B) | ngf {args.ngf} ndf {args.ndf} "
          f"n_blocks {n_blocks(args)} | pool {args.pool_size} | warmup {args.warmup} + timed {args.steps} steps "
          f"(one G + one D update each){f' | {args.repeats} interleaved repeats' if args.repeats > 1 else ''}")
    print(f"precision: gdm / plain-loop {args.precision}, reference fp32"
          + (f" | cudnn.benchmark: reference on, others {'on' if args.cudnn_benchmark else 'off'}" if cuda else ""))
    print(f"parameters (reference = gdm, asserted): generator {counts['g']:,} | discriminator {counts['d']:,} "
          f"| total 2 x {counts['g'] + counts['d']:,}", flush=True)

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            r = run_variant(child_argv(args, v), args.threads, v)
            if (r["g_params"], r["d_params"]) != (counts["g"], counts["d"]):
                raise SystemExit(f"{v}: nets of {r['g_params']:,} / {r['d_params']:,} parameters, expected "
                                 f"{counts['g']:,} / {counts['d']:,}")
            runs[v].append(r)
            gpu = f", peak GPU {r['peak_gpu_gib']:.2f} GiB" if r["peak_gpu_gib"] is not None else ""
            print(f"  [{rep + 1}/{args.repeats}] {v:<26} {r['steps_per_s']:8.3f} steps/s  "
                  f"(median step {r['median_step_s']:.4f} s; {r['seconds']:.1f} s, threads {r['threads']}, "
                  f"peak RSS {r['peak_rss_gib']:.2f} GiB{gpu}, weights {r['weights']})", flush=True)

    best = {v: max(rs, key=lambda r: r["steps_per_s"]) for v, rs in runs.items()}
    ref = best["reference"]["steps_per_s"] if "reference" in best else None
    gpu_col = f" {'peak GPU GiB':>12}" if cuda else ""
    header = (f"{'variant':<26} {'steps/s':>8} {'images/s':>9} {'median step s':>14} {'peak RSS GiB':>13}"
              f"{gpu_col} {'weights':>7} {'vs reference':>13} {'vs plain-loop':>14}")
    print()
    print(header)
    print("-" * len(header))
    for v, r in best.items():
        vs_ref = f"{r['steps_per_s'] / ref:.3f}x" if ref else "-"
        base = best.get(BASELINE.get(v, ""))
        vs_plain = f"{r['steps_per_s'] / base['steps_per_s']:.3f}x" if base else "-"
        gpu = f" {max(x['peak_gpu_gib'] for x in runs[v]):12.2f}" if cuda else ""
        print(f"{v:<26} {r['steps_per_s']:8.3f} {r['images_per_s']:9.2f} {r['median_step_s']:14.4f} "
              f"{max(x['peak_rss_gib'] for x in runs[v]):13.2f}{gpu} {r['weights']:>7} {vs_ref:>13} {vs_plain:>14}")
    print("steps/s = timed steps / wall seconds" + (" (best of the repeats)" if args.repeats > 1 else "")
          + "; a step = one A and one B image = one G and one D update; images/s = 2 x batch x steps/s; "
          "median step s = median single-step time; ratios are on steps/s (vs plain-loop: gdm vs plain-loop, "
          "gdm-channels_last vs plain-loop-channels_last; the target is >= 0.95x).")
    nchw = [v for v in best if v.endswith("channels_last") and any(x["weights"] != "NHWC" for x in runs[v])]
    if nchw:
        print(f"WARNING: {', '.join(nchw)} trained with NCHW weights (only the inputs were channels_last): "
              "channels_last=True did not convert the nets.")


if __name__ == "__main__":
    main()
