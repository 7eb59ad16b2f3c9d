"""The types of gdm's options, shared by the constructors a config builds.

A constructor's signature is its schema: each option is annotated with its type and bounds, and the
constructor is wrapped in pydantic's `validate_call` (`checked` below), so one declaration serves the config
path and the Python API alike, and a wrong value fails with its parameter's name before anything is built.
Chosen over hydra-zen or structured configs, which keep a second copy of every signature as a dataclass and
check only the config path; pydantic's errors carry the parameter and the value, from which the task layer
(`gdm.tasks.options`) writes one sentence naming `key=value`, the allowed range and the `description`.

Rules for an annotation: `Strict()` for int and bool (Hydra reads `true`, `2.5` and `abc` as a bool, a float
and a string, which must never become 1, 2 or a truthy string); `allow_inf_nan=False` for floats (strict
floats still take ints: Adam's betas [0, 0.9]); `Literal[...]` for choices; `Sequence[...]` or tuples where
a list arrives (an OmegaConf ListConfig is accepted as it is). Each `description` says what the value means
and where a published default comes from. This module imports nothing of gdm.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, Strict, validate_call

# Arbitrary types: tensors, nets and data modules pass through unvalidated beside the options. Defaults
# are validated too: they are what a config without the key builds.
checked = validate_call(config=ConfigDict(arbitrary_types_allowed=True, validate_default=True))


def _whole(value: object) -> object:
    # A Literal of ints takes True as 1 and 3.0 as 3, and Strict() cannot apply to it.
    if isinstance(value, (bool, float)):
        raise ValueError("not an integer")
    return value


# Before a Literal of ints: only ints reach it.
WholeChoice = BeforeValidator(_whole)

Flag = Annotated[bool, Strict()]
Count = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]

Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1, description="a seed NumPy and torch accept")]
SplitSeed = Annotated[int, Strict(), Field(ge=0, description="seed of the fixed train / val / test split")]
LearningRate = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False, description="a learning rate")]
LossWeight = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False, description="a loss weight; 0: off")]
Probability = Annotated[float, Strict(), Field(gt=0, lt=1, allow_inf_nan=False)]
AdamBeta = Annotated[float, Strict(), Field(ge=0, lt=1, allow_inf_nan=False)]
AdamBetas = Annotated[tuple[AdamBeta, AdamBeta], Field(
    description="Adam's two coefficients (beta1, beta2); DCGAN's [0.5, 0.999]")]
HeldOut = Annotated[float, Strict(), Field(ge=0, lt=1, allow_inf_nan=False,
                                           description="the share of the images held out")]
ImageSide = Annotated[int, Strict(), Field(ge=1, description="pixels of each side")]
LoadSide = Annotated[int, Strict(), Field(ge=1, description="pixels of the short side before the crop")]
BatchSize = Annotated[int, Strict(), Field(
    ge=1, description="images per batch; 64 in DCGAN, 1 in CycleGAN")]
Workers = Annotated[int, Strict(), Field(
    ge=0, description="DataLoader worker processes; 0: the main process")]
Epochs = Annotated[int, Strict(), Field(ge=0)]
Channel = Annotated[int, Strict(), Field(ge=0, le=255)]
RGB = Annotated[tuple[Channel, Channel, Channel], Field(
    description="an RGB colour, e.g. [255,255,255] (white)")]
Background = Annotated[RGB, Field(
    description="the RGB colour transparent pixels are composited over; white [255,255,255] by default")]
Channels = Annotated[Literal[1, 3], WholeChoice, Field(description="1: greyscale, 3: RGB")]
Width = Annotated[int, Strict(), Field(ge=1, description="channels of the first (or last) layer")]
ChannelsLast = Annotated[Annotated[bool, Strict()] | Literal["auto"], Field(
    description="true: NHWC; false: NCHW; auto: NHWC on CUDA, and on the CPU where it measured faster")]
GradClip = Annotated[float | None, Field(gt=0, strict=True, allow_inf_nan=False, description=(
    "the largest L2 norm of each optimizer's gradients; null: no clipping"))]
EpochsAtLr = Annotated[Epochs, Field(
    description="epochs at the initial learning rate; 100 in CycleGAN, pix2pix")]
NLLTolerance = Annotated[float, Field(gt=0, lt=1, strict=True, allow_inf_nan=False, description=(
    "dopri5's atol and rtol for test/nll_bpd; 1e-5 in FFJORD (Grathwohl et al. 2019)"))]
EpochsDecay = Annotated[Epochs, Field(description="epochs of linear decay to 0; 100 in CycleGAN and pix2pix")]
Visuals = Annotated[Count, Field(description="images in the logged grid")]
