"""A Qwen2-VL whose eyes are pretrained: a frozen ImageNet CNN (MobileNetV2 or EfficientNet-Lite0) as vision tower.

No ViT weights install offline, and a randomly initialised tiny ViT never sees features that tell two instances of
the same shape apart. This family is a real `Qwen2VLForConditionalGeneration` (the Qwen2-VL processor, chat template,
`<|image_pad|>` tokens, M-RoPE positions and box text are all unchanged) in which `model.visual` is replaced by
`CNNVisionTower`: the packaged, frozen, ImageNet-pretrained CNN feature map, average-pooled onto the merged token
grid, followed by a trainable projector into the language model's hidden size, plus (by default) a trainable
embedding of each token's normalised (x, y) position in the image (`CNNVLMConfig.position_embedding`).

Why the swap is exact (read in transformers 5.23, `models/qwen2_vl/modeling_qwen2_vl.py`):

- `Qwen2VLModel.get_image_features` calls `self.visual(pixel_values, grid_thw=image_grid_thw)`, reads
  `self.visual.dtype` (to cast the pixels) and `self.visual.spatial_merge_size`, and splits
  `outputs.pooler_output` into `grid_thw.prod(-1) // merge**2` rows per image, which are then scattered onto the
  `<|image_pad|>` tokens in order. The tower therefore returns a `BaseModelOutputWithPooling` whose `pooler_output`
  has one row per merged 2x2 block, row-major over the merged grid: the order of the processor's patches.
- The processor (`Qwen2VLImageProcessor.patchify`) flattens an image into rows ordered
  (grid_h/merge, grid_w/merge, merge, merge) with columns (channel, temporal, patch, patch), CLIP-normalised. That is
  invertible: `unpatchify` puts the patches back into the exact resized image, and the CLIP normalisation is
  converted to the CNN's.
- M-RoPE positions (`get_rope_index`) come from `image_grid_thw` and `config.vision_config.spatial_merge_size`, not
  from the tower, so they are those of Qwen2-VL.

Saving and loading: the checkpoint's `model_type` is `qwen2_vl_cnn` (registered with transformers' Auto classes when
this module is imported), so `from_pretrained` rebuilds this tower instead of a ViT; `load_vlm` maps it to the
`qwen2_vl` family (prompts, box format, parsing). The frozen CNN weights are saved with the checkpoint.

The tower is frozen, so its pooled features depend only on the image: they are computed once per image and kept in an
in-memory cache keyed by the pixels' hash (`CNNVisionTower.cache_size`), so epochs, GRPO groups and repeated supports
cost one CNN pass per distinct image. `save_features` / `load_features` share those features across processes and
runs (a process-wide store consulted on a miss), so an ablation of many runs pays one CNN pass per frame.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from focuskit.core.errors import ConfigError
from focuskit.models.vlms.factory import VLMBundle
from focuskit.models.vlms.tiny import TinyVLMConfig, _model_config, build_tiny_processor

MODEL_TYPE = "qwen2_vl_cnn"
Backbone = Literal["mobilenetv2", "efficientnet_lite0"]
Projector = Literal["mlp", "linear"]
_POS_FREQS = (0.5, 1.0, 2.0, 4.0)
_BACKBONES: dict[str, dict[str, Any]] = {
    # channels at stride 16, and the normalisation the ImageNet weights were trained with
    "mobilenetv2": {"dim": 96, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "efficientnet_lite0": {"dim": 112, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}


@dataclass
class CNNVLMConfig(TinyVLMConfig):
    """A tiny Qwen2-VL language model (the `TinyVLMConfig` fields) with a frozen CNN vision tower.

    The ViT fields of `TinyVLMConfig` (`vision_depth`, ...) only size the unused `vision_config`; the tower is the CNN.
    """

    backbone: Backbone = "mobilenetv2"
    cnn_scale: float = 2.0
    """The resized image is upsampled by this factor before the CNN (stride 16): at 2.0 one merged 28 px token covers
    a 3.5x3.5 cell of the stride-16 map, so small objects still get features of their own."""
    projector_hidden: int = 256
    cache_size: int = 20000
    """Pooled CNN features kept in memory, one entry per distinct image (0 disables the cache)."""
    projector: Projector = "mlp"
    """"mlp": LayerNorm, Linear, GELU, Linear (trainable). "linear": LayerNorm then one Linear with orthonormal rows
    (a random orthogonal projection; an isometry when `hidden_size - position_dims` >= the CNN's channels): with
    `freeze_projector` the language model sees the ImageNet features' own geometry, which a trainable projector
    trained on "find the object" first was measured to lose (docs/toy_ablation.md, the token oracle)."""
    freeze_projector: bool = False
    """Keep the projector and position embedding at their (seeded) initial weights during training."""
    position_dims: int = 0
    """0: the position embedding is added to every dimension of a visual token. n > 0: the last n dimensions carry the
    position only and the projector writes the others, so where a token is cannot drown what it shows."""
    position_embedding: bool = True
    """Add a trainable embedding of each token's normalised (x, y) centre to the projector output. Qwen2-VL's ViT
    (2-D RoPE inside the tower) hands the language model tokens that know where in the image they are; pooled CNN
    features are translation-equivariant and barely do, so without this the tiny LM has to recover position from
    M-RoPE alone to bind box text (0-1000 image coordinates) to an image region. False is the bare CNN + projector."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "qwen2_vl":
            raise ConfigError(f"the CNN-eyed model is a Qwen2-VL; family must be 'qwen2_vl', got {self.family!r}")
        if self.backbone not in _BACKBONES:
            raise ConfigError(f"backbone must be one of {sorted(_BACKBONES)}, got {self.backbone!r}")
        if self.cnn_scale <= 0:
            raise ConfigError(f"cnn_scale must be > 0, got {self.cnn_scale}")
        if self.projector not in ("mlp", "linear"):
            raise ConfigError(f"projector must be 'mlp' or 'linear', got {self.projector!r}")
        if not 0 <= self.position_dims < self.hidden_size or (self.position_dims and not self.position_embedding):
            raise ConfigError(
                f"position_dims must be in [0, hidden_size) and needs position_embedding, got {self.position_dims}"
            )
        if self.projector_hidden < 1 or self.cache_size < 0:
            raise ConfigError(
                f"projector_hidden must be >= 1 and cache_size >= 0, got {self.projector_hidden}, {self.cache_size}"
            )


def _build_trunk(backbone: str, *, pretrained: bool) -> nn.Module:
    if backbone == "mobilenetv2":
        from focuskit.models.encoders.mobilenetv2 import _Trunk, build_mobilenetv2

        return _Trunk(build_mobilenetv2(pretrained=pretrained), "s16")
    from focuskit.models.encoders.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0("s16", pretrained=pretrained)


def unpatchify(patches: torch.Tensor, grid_thw: torch.Tensor, patch_size: int, merge_size: int) -> list[torch.Tensor]:
    """Invert `Qwen2VLImageProcessor.patchify`: flat patches `(sum t*h*w, C*T*p*p)` -> one `(C, h*p, w*p)` per image.

    The first temporal frame is returned (an image's temporal patches are copies of it).
    """
    images = []
    offset = 0
    for t, h, w in grid_thw.tolist():
        n = t * h * w
        x = patches[offset : offset + n]
        offset += n
        x = x.reshape(t, h // merge_size, w // merge_size, merge_size, merge_size, 3, -1, patch_size, patch_size)
        x = x[0, ..., 0, :, :]  # (h/m, w/m, m, m, C, p, p)
        x = x.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, h * patch_size, w * patch_size)
        images.append(x)
    return images


class CNNVisionTower(nn.Module):
    """Drop-in for Qwen2-VL's `model.visual`: `(pixel_values, grid_thw) -> pooler_output (N_merged, hidden)`.

    Frozen CNN (always in eval mode: its BatchNorm statistics never move) -> stride-16 map, average-pooled onto the
    merged grid (h/merge, w/merge) -> trainable projector (LayerNorm, Linear, GELU, Linear).
    """

    def __init__(
        self,
        *,
        backbone: str,
        hidden_size: int,
        projector_hidden: int,
        patch_size: int,
        merge_size: int,
        processor_mean: tuple[float, ...],
        processor_std: tuple[float, ...],
        cnn_scale: float,
        cache_size: int,
        position_embedding: bool = False,
        projector: str = "mlp",
        position_dims: int = 0,
        freeze_projector: bool = False,
    ) -> None:
        super().__init__()
        spec = _BACKBONES[backbone]
        self.backbone = backbone
        self.spatial_merge_size = merge_size
        self.patch_size = patch_size
        self.cnn_scale = cnn_scale
        self.cache_size = cache_size
        self.trunk = _build_trunk(backbone, pretrained=False)
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        # pixel_cnn = (pixel_clip * std_clip + mean_clip - mean_cnn) / std_cnn = pixel_clip * scale + shift
        # (plain floats, not buffers: from_pretrained builds on the meta device and restores only saved tensors)
        self._norm = [
            (ps / cs, (pm - cm) / cs)
            for pm, ps, cm, cs in zip(processor_mean, processor_std, spec["mean"], spec["std"], strict=True)
        ]
        dim = spec["dim"]
        content = hidden_size - position_dims
        if projector == "linear":
            linear = nn.Linear(dim, content, bias=False)
            nn.init.orthogonal_(linear.weight)
            self.projector = nn.Sequential(nn.LayerNorm(dim), linear)
        else:
            self.projector = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, projector_hidden), nn.GELU(), nn.Linear(projector_hidden, content)
            )
        # Fourier features of the token centre in [0, 1] image coordinates (the frame box text is written in)
        self.position_dims = position_dims
        self.position = (
            nn.Sequential(nn.Linear(4 * len(_POS_FREQS) + 2, projector_hidden), nn.GELU(),
                          nn.Linear(projector_hidden, position_dims or hidden_size))
            if position_embedding else None
        )  # fmt: skip
        # Frozen by running under no_grad in `forward`: `from_pretrained` hands back every parameter with
        # requires_grad=True, so a flag set here would not survive a save/load round trip.
        self.freeze_projector = freeze_projector
        self._cache: OrderedDict[tuple[str, int, int], torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def load_pretrained_trunk(self) -> None:
        """Put the packaged ImageNet weights into the CNN (a fresh build; checkpoints carry them already)."""
        self.trunk.load_state_dict(_build_trunk(self.backbone, pretrained=True).state_dict())

    @property
    def dtype(self) -> torch.dtype:
        return self.projector[1].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.projector[1].weight.device

    def train(self, mode: bool = True) -> CNNVisionTower:
        super().train(mode)
        self.trunk.eval()
        return self

    def export_cache(self) -> dict[tuple[Any, ...], torch.Tensor]:
        """This tower's cached features, keyed for `_SHARED_FEATURES` (see `save_features`)."""
        return {(self.backbone, self.cnn_scale, *key): value for key, value in self._cache.items()}

    def clear_cache(self) -> None:
        self._cache.clear()
        self.cache_hits = self.cache_misses = 0

    @torch.no_grad()
    def cnn_features(self, image: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Pooled CNN features `(gh*gw, C)` of one processor-normalised image `(3, H, W)`, row-major over the grid."""
        key = None
        if self.cache_size:
            digest = hashlib.blake2b(image.detach().float().cpu().numpy().tobytes(), digest_size=16).hexdigest()
            key = (digest, *grid_hw)
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return hit.to(image.device)
            self.cache_misses += 1
            shared = _SHARED_FEATURES.get((self.backbone, self.cnn_scale, *key))
            if shared is not None:
                self._cache[key] = shared
                return shared.to(image.device)
        trunk_dtype = next(self.trunk.parameters()).dtype
        scale = torch.tensor([a for a, _ in self._norm], device=image.device).view(3, 1, 1)
        shift = torch.tensor([b for _, b in self._norm], device=image.device).view(3, 1, 1)
        x = (image * scale + shift).to(trunk_dtype)[None]
        if self.cnn_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.cnn_scale, mode="bilinear", align_corners=False)
        fmap = self.trunk(x)
        pooled = F.adaptive_avg_pool2d(fmap.float(), grid_hw)[0]  # (C, gh, gw)
        feats = pooled.flatten(1).T.contiguous()
        if key is not None:
            self._cache[key] = feats.cpu() if feats.device.type != "cpu" else feats
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return feats

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
        """`hidden_states`: the processor's `pixel_values` `(sum t*h*w, 3*T*p*p)`; `grid_thw` `(images, 3)`."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        m = self.spatial_merge_size
        images = unpatchify(hidden_states.float(), grid_thw, self.patch_size, m)
        feats = [
            self.cnn_features(img, (int(h) // m, int(w) // m))
            for img, (_, h, w) in zip(images, grid_thw.tolist(), strict=True)
        ]
        cnn = torch.cat(feats).to(device=self.device, dtype=self.dtype)
        with torch.no_grad() if self.freeze_projector else contextlib.nullcontext():
            out = self.projector(cnn)
            if self.position is not None:
                grids = [(int(h) // m, int(w) // m) for _, h, w in grid_thw.tolist()]
                pos = self.position(_position_features(grids, self.device).to(self.dtype))
                out = torch.cat([out, pos], dim=1) if self.position_dims else out + pos
        return BaseModelOutputWithPooling(last_hidden_state=cnn, pooler_output=out)


_SHARED_FEATURES: dict[tuple[Any, ...], torch.Tensor] = {}
"""Process-wide pooled features, keyed (backbone, cnn_scale, pixel digest, gh, gw), filled by `load_features`.
Every tower consults it on a miss of its own cache, so many training runs in one process (or in workers that load
the same file) pay for one CNN pass per distinct image. Valid because the trunk is frozen ImageNet weights."""


def save_features(model: Any, path: str | Path) -> int:
    """Write the features cached by `model`'s tower to `path` (torch file); returns how many images."""
    from focuskit.core.io import atomic_write_bytes

    tower = vision_tower(model)
    if tower is None:
        raise ConfigError("save_features needs a model with a CNN vision tower (model_type qwen2_vl_cnn)")
    entries = tower.export_cache()
    buf = io.BytesIO()
    torch.save(entries, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return len(entries)


def load_features(path: str | Path) -> int:
    """Add a `save_features` file to the process-wide store; returns how many images it held."""
    entries = torch.load(Path(path), weights_only=True)
    _SHARED_FEATURES.update(entries)
    return len(entries)


def clear_shared_features() -> None:
    """Empty the process-wide store (`load_features`)."""
    _SHARED_FEATURES.clear()


def _position_features(grids: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """`(sum gh*gw, 4*F+2)`: (x, y) of each merged token's centre in [0, 1], row-major, with sin/cos at `_POS_FREQS`."""
    rows = []
    for gh, gw in grids:
        ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) / gh
        xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) / gw
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        rows.append(torch.stack([xx.flatten(), yy.flatten()], dim=1))
    xy = torch.cat(rows)
    freqs = torch.tensor(_POS_FREQS, device=device) * 2 * torch.pi
    angles = (xy[:, :, None] * freqs).flatten(1)
    return torch.cat([xy, angles.sin(), angles.cos()], dim=1)


def _register() -> tuple[type, type]:
    from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    class Qwen2VLCNNConfig(Qwen2VLConfig):
        """Qwen2-VL config plus `cnn_tower` (the `CNNVisionTower` arguments)."""

        model_type = MODEL_TYPE

        def __init__(self, cnn_tower: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.cnn_tower = dict(cnn_tower or {})
            super().__init__(**kwargs)

    class Qwen2VLCNNForConditionalGeneration(Qwen2VLForConditionalGeneration):
        """`Qwen2VLForConditionalGeneration` with `model.visual` = `CNNVisionTower`."""

        config_class = Qwen2VLCNNConfig

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            tower = config.cnn_tower
            self.model.visual = CNNVisionTower(
                backbone=tower["backbone"], hidden_size=config.text_config.hidden_size,
                projector_hidden=tower["projector_hidden"], patch_size=config.vision_config.patch_size,
                merge_size=config.vision_config.spatial_merge_size,
                processor_mean=tuple(tower["processor_mean"]), processor_std=tuple(tower["processor_std"]),
                cnn_scale=tower["cnn_scale"], cache_size=tower["cache_size"],
                position_embedding=tower.get("position_embedding", False),
                projector=tower.get("projector", "mlp"), position_dims=tower.get("position_dims", 0),
                freeze_projector=tower.get("freeze_projector", False),
            )  # fmt: skip

    Qwen2VLCNNConfig.__name__ = Qwen2VLCNNConfig.__qualname__ = "Qwen2VLCNNConfig"
    Qwen2VLCNNForConditionalGeneration.__name__ = "Qwen2VLCNNForConditionalGeneration"
    Qwen2VLCNNForConditionalGeneration.__qualname__ = "Qwen2VLCNNForConditionalGeneration"
    Qwen2VLCNNConfig.__module__ = Qwen2VLCNNForConditionalGeneration.__module__ = __name__
    AutoConfig.register(MODEL_TYPE, Qwen2VLCNNConfig, exist_ok=True)
    AutoModelForImageTextToText.register(Qwen2VLCNNConfig, Qwen2VLCNNForConditionalGeneration, exist_ok=True)
    return Qwen2VLCNNConfig, Qwen2VLCNNForConditionalGeneration


Qwen2VLCNNConfig, Qwen2VLCNNForConditionalGeneration = _register()


def build_cnn_vlm(config: CNNVLMConfig | None = None, *, attn_implementation: str = "sdpa") -> VLMBundle:
    """A Qwen2-VL with random language-model and projector weights (seeded) and the frozen ImageNet CNN as eyes."""
    config = config or CNNVLMConfig()
    processor = build_tiny_processor(config)
    base = _model_config(config, processor.tokenizer).to_dict()
    ip = processor.image_processor
    base["cnn_tower"] = {
        "backbone": config.backbone,
        "projector_hidden": config.projector_hidden,
        "processor_mean": list(ip.image_mean),
        "processor_std": list(ip.image_std),
        "cnn_scale": config.cnn_scale,
        "cache_size": config.cache_size,
        "position_embedding": config.position_embedding,
        "projector": config.projector,
        "position_dims": config.position_dims,
        "freeze_projector": config.freeze_projector,
        "focuskit_config": asdict(config),
    }
    for key in ("model_type", "architectures", "transformers_version"):
        base.pop(key, None)
    model_config = Qwen2VLCNNConfig(**base)
    model_config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Qwen2VLCNNForConditionalGeneration(model_config)
    model.model.visual.load_pretrained_trunk()
    model.eval()
    tok = processor.tokenizer
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    return VLMBundle(model=model, processor=processor, family="qwen2_vl", prompt=config.prompt_config())


def vision_tower(model: Any) -> CNNVisionTower | None:
    """The `CNNVisionTower` inside `model` (a bare, peft-wrapped or Trainer-wrapped model), or None."""
    for module in model.modules():
        if isinstance(module, CNNVisionTower):
            return module
    return None
