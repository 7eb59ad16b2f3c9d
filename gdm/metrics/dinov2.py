"""DINOv2 ViT-L/14 features for the Fréchet distance FD_DINOv2.

Source: Stein et al. 2023, "Exposing flaws of generative model evaluation metrics and their unfair
treatment of diffusion models" (NeurIPS 2023); reference code: github.com/layer6ai-labs/dgm-eval
(`dgm_eval/models/dinov2.py`, its default `--model dinov2`, without `--clean_resize`).

- Input: uint8 images (N, C, H, W) in [0, 255], C = 1 (grey, repeated to RGB) or 3, any H and W.
- Output: float32 (N, num_features), the final-norm CLS token (1024-d for ViT-L/14), i.e. what
  `torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')(x)` returns.
- The architecture comes from timm (`pip install timm`, a gdm dependency); the weights only from a
  local file, never from the network: Meta's `dinov2_vitl14_pretrain.pth` or timm's
  `model.safetensors` / `pytorch_model.bin` (HF repo timm/vit_large_patch14_dinov2.lvd142m).
- A missing, unset or unloadable weights file raises `gdm.errors.GdmError` with one sentence that
  says what to do.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gdm.errors import GdmError

DEFAULT_MODEL = "vit_large_patch14_dinov2.lvd142m"
IMAGE_SIZE = 224
META_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
HF_REPO = "timm/vit_large_patch14_dinov2.lvd142m"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download_hint(model_name: str) -> str:
    """Where the weights of `model_name` come from, per timm's own pretrained config."""
    import timm.models

    url, hf_repo = META_URL, HF_REPO
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # unknown names are reported by create_model; the hint only needs a fallback
        cfg = None
    if cfg is not None and (cfg.url or cfg.hf_hub_id):
        url, hf_repo = cfg.url or url, (cfg.hf_hub_id or hf_repo).rstrip("/")
    return (
        f"download Meta's {url} (or model.safetensors from https://huggingface.co/{hf_repo}) "
        "and pass it as dinov2_weights=/path/to/that/file"
    )


def _one_line(err: Exception) -> str:
    text = str(err)
    # torch.load(weights_only=True) wraps the real cause in advice to unpickle untrusted files; keep the cause.
    text = text.split("WeightsUnpickler error:", 1)[-1]
    first = next((line.strip().rstrip(".") for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _resample_pos_embed_like_dinov2(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resample a (1, 1 + M*M, D) position embedding to `grid` exactly as Meta's hub model does at run time.

    DinoVisionTransformer.interpolate_pos_encoding (interpolate_offset=0.1, interpolate_antialias=False
    for the non-register models) interpolates bicubically with scale_factor=(g + 0.1) / M and no
    antialias; timm's checkpoint filter uses size=g with antialias=True, which gives visibly different
    embeddings (37 -> 16 is a 2.3x downsample) and so different features from the published FD_DINOv2.
    """
    num_patches = pos_embed.shape[1] - 1
    side = math.isqrt(num_patches)
    if side * side != num_patches or (side, side) == tuple(grid):
        return pos_embed  # not Meta's square layout, or already the right size: leave it to load's checks
    cls_pos, patch_pos = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    patch_pos = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos, scale_factor=((grid[0] + 0.1) / side, (grid[1] + 0.1) / side), mode="bicubic", antialias=False
    )
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
    return torch.cat([cls_pos, patch_pos], dim=1)


def _pil_bicubic_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to size x size like PIL's `Image.resize(..., BICUBIC)` on RGB images.

    PIL resamples width then height, rounding (half up) and clipping to uint8 after each pass, and
    skips a pass whose side already matches. Mirroring that, in float64, stays within one grey level
    of PIL on rare pixels; a single float32 pass differs on ~20% of pixels, by up to ~20 levels on
    noisy images where PIL clips the bicubic overshoot between the passes.
    """
    dtype = torch.float32 if images.device.type == "mps" else torch.float64  # MPS has no float64
    x = images.to(dtype)
    for target in ((x.shape[-2], size), (size, size)):  # width first, then height, as PIL does
        if tuple(x.shape[-2:]) != target:
            x = F.interpolate(x, size=target, mode="bicubic", antialias=True, align_corners=False)
            x = x.add(0.5).floor().clamp(0, 255)
    return x


class DINOv2Features(nn.Module):
    """DINOv2 CLS-token features with dgm-eval's preprocessing.

    Preprocessing (dgm-eval's `DINOv2Encoder.transform`: `Resize((224, 224), BICUBIC)`, `ToTensor`,
    `Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)`):

    - grey -> 3 channels (dgm-eval opens every file with `.convert('RGB')`);
    - resize straight to 224x224, no aspect-preserving short-side resize and no crop, because the
      size is given as a tuple;
    - bicubic with antialias=True: dgm-eval resizes PIL images, and PIL's bicubic widens its filter
      when downsampling and uses the a=-0.5 kernel; torch's antialiased bicubic is the PIL-compatible
      one (without antialias torch uses a=-0.75, which differs even when upsampling). Like PIL it
      resizes width then height with uint8 rounding after each pass (`_pil_bicubic_resize`); inputs
      already 224x224 are left untouched, as PIL does;
    - scale to [0, 1], normalise with the ImageNet mean/std.

    The position embeddings (trained at 518) are resampled once to the 16x16 grid the way Meta's hub
    model does on every forward (see `_resample_pos_embed_like_dinov2`).
    """

    name = "dinov2"  # names the values: val/fid_dinov2

    def __init__(self, weights_path: str | None, model_name: str = DEFAULT_MODEL):
        super().__init__()
        import timm  # noqa: F401  (fail here, not mid-load, if the dependency is missing)

        if weights_path is None:
            raise GdmError(f"features=dinov2 needs dinov2_weights: {_download_hint(model_name)}.")
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise GdmError(f"dinov2_weights={weights_path} is not a file: {_download_hint(model_name)}.")
        self.model_name = model_name
        self.weights_path = path
        try:
            self.weights_sha256 = _sha256(path)
        except OSError as err:
            raise GdmError(f"dinov2_weights={path} could not be read ({_one_line(err)}).") from None
        # Random init and loading must not draw from the training run's RNG stream.
        with torch.random.fork_rng(devices=[]):
            self.net = self._build(path, model_name)
        self.net.requires_grad_(False)
        self.num_features = int(self.net.num_features)
        self.register_buffer("mean", torch.tensor(_imagenet_stats()[0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_imagenet_stats()[1]).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    @staticmethod
    def _build(path: Path, model_name: str) -> nn.Module:
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        def create() -> nn.Module:
            return timm.create_model(model_name, pretrained=False, num_classes=0, img_size=IMAGE_SIZE)

        with torch.device("meta"):  # no random init of 300M parameters that the file overwrites (~10 s)
            net = create()
        try:
            state = _read_state_dict(path)
        except Exception as err:  # corrupt / truncated / not a checkpoint at all
            raise GdmError(
                f"dinov2_weights={path} could not be read as a safetensors or torch checkpoint "
                f"({_one_line(err)})."
            ) from None
        for key in ("model", "state_dict"):  # training checkpoints wrap the weights
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise GdmError(f"dinov2_weights={path} is not a flat state dict of tensors.")
        state = {k: v.float() for k, v in state.items()}
        if isinstance(state.get("pos_embed"), torch.Tensor) and not getattr(net, "no_embed_class", False):
            state["pos_embed"] = _resample_pos_embed_like_dinov2(state["pos_embed"], net.patch_embed.grid_size)
        try:
            # timm's filter maps Meta's key names (drops mask_token; SwiGLU w12/w3 -> fc1/fc2 for ViT-g).
            state = checkpoint_filter_fn(state, net)
        except Exception as err:
            raise GdmError(
                f"dinov2_weights={path} is not a {model_name} checkpoint ({_one_line(err)})."
            ) from None
        expected = net.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong_shape:
            if missing:
                what = f"has no '{missing[0]}' ({len(missing)} keys missing)"
            elif wrong_shape:
                k = wrong_shape[0]
                what = f"has '{k}' of shape {tuple(state[k].shape)} where {tuple(expected[k].shape)} is expected"
            else:
                what = f"has the unexpected key '{unexpected[0]}'"
            raise GdmError(f"dinov2_weights={path} is not a {model_name} checkpoint: it {what}.")
        net.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in itertools.chain(net.parameters(), net.buffers())):
            # A buffer that checkpoints do not hold (none in timm 1.0's ViT): build the model for real.
            net = create()
            net.load_state_dict(state, strict=True)
        return net

    def train(self, mode: bool = True) -> DINOv2Features:
        return super().train(False)  # never leaves eval mode, like torchmetrics' Inception

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"DINOv2Features takes uint8 images (N, 1|3, H, W); got {images.dtype} {tuple(images.shape)}."
            )
        x = images.to(self.mean.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = _pil_bicubic_resize(x, IMAGE_SIZE)
        x = (x.float() / 255.0 - self.mean) / self.std
        with torch.autocast(device_type=x.device.type, enabled=False):  # mixed precision would shift FD
            return self.net(x).float()

    def protocol(self) -> dict:
        return {
            "features": "dinov2",
            "model": self.model_name,
            "weights_file": str(self.weights_path),
            "weights_sha256": self.weights_sha256,
            "resize": {"size": IMAGE_SIZE, "method": "bicubic", "antialias": True},
            "normalize": "imagenet",
            "num_features": self.num_features,
        }


def _imagenet_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
