"""Local Hugging Face VLMs (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision) as a `VLMBackend`, via the processor's chat template.

The conversation is built as a chat message list and rendered by the checkpoint's own chat template, so the model
sees exactly the format it was instruction-tuned on; generation is greedy unless a temperature is given.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from focuskit.backends.base import GenerationOptions, prepare_images
from focuskit.core.errors import BackendError, ConfigError, ModelError
from focuskit.models.vlms import VLMBundle
from focuskit.models.vlms.generation import GenerationSettings, build_generation_config, generate

VIDEO_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava_onevision")
"""Families whose processors accept a `videos=` input (frames as one clip)."""
TINY = "tiny"
"""Model name that builds the tiny random-weight Qwen2-VL (tests, demos, the offline server)."""


class HFBackend:
    """A loaded VLM bundle answering prompts; thread-safe (one generation at a time)."""

    def __init__(self, bundle: VLMBundle, *, name: str | None = None, max_side: int = 1024) -> None:
        self.bundle = bundle
        self.name = name or f"hf:{bundle.family}"
        self.max_side = max_side
        self.supports_video = bundle.family in VIDEO_FAMILIES
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | Path = TINY, *, max_side: int = 1024, **load_kwargs: Any) -> HFBackend:
        """`model` is a local checkpoint directory, a hub id, or "tiny" for the offline random-weight model."""
        from focuskit.models.vlms import build_tiny_vlm, load_vlm

        if str(model) == TINY:
            if load_kwargs:
                raise ConfigError(f"the tiny model takes no load options, got {sorted(load_kwargs)}")
            return cls(build_tiny_vlm(), name="hf:tiny", max_side=max_side)
        return cls(load_vlm(model, **load_kwargs), name=f"hf:{model}", max_side=max_side)

    def _messages(self, n_images: int, prompt: str, video: bool) -> list[dict[str, Any]]:
        visual: list[dict[str, Any]] = [{"type": "video"}] if video else [{"type": "image"} for _ in range(n_images)]
        return [{"role": "user", "content": [*visual, {"type": "text", "text": prompt}]}]

    def generate(
        self,
        images: Sequence[Image.Image],
        prompt: str,
        *,
        options: GenerationOptions | None = None,
        video: bool = False,
    ) -> str:
        import torch

        opts = options or GenerationOptions()
        if video and not self.supports_video:
            raise BackendError(f"{self.name} cannot read videos; pass frames as images instead")
        if video and not images:
            raise BackendError("a video needs at least one frame")
        frames = prepare_images(images, max_side=self.max_side)
        if video:  # a clip has one frame size; video processors stack frames into one array
            frames = [f if f.size == frames[0].size else f.resize(frames[0].size, Image.BILINEAR) for f in frames]
        processor, model = self.bundle.processor, self.bundle.model
        text = processor.apply_chat_template(
            self._messages(len(frames), prompt, video), add_generation_prompt=True, tokenize=False
        )
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if video:
            kwargs["videos"] = [frames]
        elif frames:
            kwargs["images"] = frames
        try:
            inputs = processor(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{self.name}: the processor rejected the input ({exc})") from None
        # Every decoding parameter is explicit: a real checkpoint's generation_config (Qwen2-VL-Instruct ships
        # repetition_penalty 1.05, top_k 1, top_p 0.001) must not change the answers behind the user's back.
        settings = GenerationSettings(
            max_new_tokens=opts.max_new_tokens,
            do_sample=opts.temperature > 0,
            temperature=opts.temperature if opts.temperature > 0 else 1.0,
            suppress_vision_tokens=True,
        )
        config = build_generation_config(settings, processor.tokenizer, self.bundle.family)
        with self._lock, torch.inference_mode():
            out = generate(model, inputs.to(model.device), config)
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        return processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
