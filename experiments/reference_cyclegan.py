"""A re-implementation of pytorch-CycleGAN-and-pix2pix's training step, the reference that
bench_cyclegan_throughput.py measures gdm against (models/cycle_gan_model.py optimize_parameters,
models/networks.py, util/image_pool.py), with its own net classes.

ResnetGenerator of nn.ReflectionPad2d / Conv2d / norm layers, ResnetBlock with `conv_block` and
`out = x + self.conv_block(x)`, NLayerDiscriminator, the norm a functools.partial of
InstanceNorm2d(affine=False, track_running_stats=False) and hence use_bias = True, init_weights normal(0, 0.02);
GANLoss('lsgan') = nn.MSELoss against `real_label.expand_as(prediction)`; ImagePool with a python list and
random.uniform / random.randint. Per step: set_input (.to(device)); forward() fake_B = G_A(real_A),
rec_A = G_B(fake_B), fake_A = G_B(real_B), rec_B = G_A(fake_A); set_requires_grad([D_A, D_B], False);
optimizer_G.zero_grad(); backward_G (idt_A = G_A(real_B), idt_B = G_B(real_A) as separate calls, GAN losses
D_A(fake_B) and D_B(fake_A) vs True, cycle L1 x lambda, sum, backward); optimizer_G.step();
set_requires_grad([D_A, D_B], True); optimizer_D.zero_grad(); backward_D_A (fake_B_pool.query(fake_B);
0.5 (crit(D(real), True) + crit(D(fake.detach()), False)); backward) and backward_D_B likewise (two backwards);
optimizer_D.step(). torch.optim.Adam with default settings (no fused flag), fp32 always (the reference has no
AMP). On CUDA, as its init_net does, each net is wrapped in nn.DataParallel(net, [0]) and, as its BaseModel
does, torch.backends.cudnn.benchmark = True. The get_current_losses() reads every print_freq (100)
iterations, visdom / HTML displays and checkpoints are left out.
"""

from __future__ import annotations

import functools
import random

import torch
from bench_harness import time_loop
from torch import nn
from torch.nn import init

NC = 3


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


def reference_nets(ngf: int, ndf: int, n_blocks: int) -> tuple[nn.Module, nn.Module]:
    norm = reference_norm_layer()
    return (ReferenceResnetGenerator(NC, NC, ngf, norm_layer=norm, use_dropout=False, n_blocks=n_blocks),
            ReferenceNLayerDiscriminator(NC, ndf, n_layers=3, norm_layer=norm))


class ReferenceCycleGANModel:
    """models/cycle_gan_model.py's training side, lambda_A = lambda_B = 10, lambda_identity = 0.5."""

    def __init__(self, ngf: int, ndf: int, n_blocks: int, pool_size: int, device: torch.device):
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

        g_a, d_a = reference_nets(ngf, ndf, n_blocks)
        g_b, d_b = reference_nets(ngf, ndf, n_blocks)
        self.netG_A, self.netG_B = init_net(g_a), init_net(g_b)
        self.netD_A, self.netD_B = init_net(d_a), init_net(d_b)
        self.fake_A_pool = ReferenceImagePool(pool_size)
        self.fake_B_pool = ReferenceImagePool(pool_size)
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


def run_reference(args, loader, device: torch.device, n_blocks: int) -> tuple[list[float], ReferenceCycleGANModel]:
    """Time the reference step over `loader` (bench_harness.time_loop); the model, to count its nets."""
    random.seed(args.seed)
    model = ReferenceCycleGANModel(args.ngf, args.ndf, n_blocks, args.pool_size, device)

    def step(i: int, data: dict) -> None:
        model.set_input(data)
        model.optimize_parameters()

    return time_loop(loader, step, args.warmup, device), model
