"""models/vlms/generation.py: one token set, one stop set, unwrapping, and generation the checkpoint cannot steer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.episode import Support
from focuskit.core.errors import ConfigError
from focuskit.localizers.vlm import VLMLocalizer, VLMLocalizerConfig
from focuskit.models.vlms import LoraSettings, VLMBundle, build_tiny_vlm, load_vlm
from focuskit.models.vlms.factory import apply_lora
from focuskit.models.vlms.generation import (
    VISION_TOKENS,
    GenerationSettings,
    base_model,
    build_generation_config,
    generate,
    stop_token_ids,
    unwrap_model,
    vision_token_ids,
)

QWEN_INSTRUCT_GENERATION = {
    "do_sample": True,
    "temperature": 0.1,
    "top_k": 1,
    "top_p": 0.001,
    "repetition_penalty": 1.05,
}
"""What Qwen2-VL-Instruct checkpoints ship in generation_config.json (sampling settings and the repetition penalty)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


SUPPORTS = [Support(_noise(64 + 8 * i, 56, i), Box(3 + i, 4, 30 + i, 40)) for i in range(2)]
QUERIES = [_noise(56 + 16 * i, 64, 100 + i) for i in range(3)]


@pytest.fixture(scope="module")
def tiny() -> VLMBundle:
    return build_tiny_vlm()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny weights saved twice: with a neutral generation config, and with Qwen2-VL-Instruct's."""
    root = tmp_path_factory.mktemp("generation")
    plain = build_tiny_vlm().save(root / "plain")
    instruct = root / "instruct"
    shutil.copytree(plain, instruct)
    path = instruct / "generation_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, **QWEN_INSTRUCT_GENERATION}))
    return plain, instruct


def test_token_sets_come_from_the_tokenizer(tiny: VLMBundle) -> None:
    tok = tiny.processor.tokenizer
    stops = stop_token_ids(tok, "qwen2_vl")
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops and tok.pad_token_id in stops
    vision = vision_token_ids(tok)
    vocab = tok.get_vocab()
    assert vision == sorted(vocab[t] for t in VISION_TOKENS if t in vocab)
    assert vocab["<|image_pad|>"] in vision and not set(vision) & set(stops)


def test_unwrap_looks_through_parallel_wrappers_but_keeps_peft(tiny: VLMBundle) -> None:
    peft_model = apply_lora(build_tiny_vlm().model, LoraSettings(r=2))
    wrapped = torch.nn.DataParallel(peft_model)  # CPU-only: a plain wrapper with .module, like DDP
    assert unwrap_model(wrapped) is peft_model
    assert base_model(wrapped) is peft_model.get_base_model()
    assert base_model(tiny.model) is tiny.model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"do_sample": False},
        {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 3},
        {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "seed": 5},
    ],
)
def test_checkpoint_generation_config_does_not_change_answers(checkpoints: tuple[Path, Path], kwargs: dict) -> None:
    plain, instruct = (load_vlm(p) for p in checkpoints)
    assert instruct.model.generation_config.repetition_penalty == 1.05  # the file was read
    config = VLMLocalizerConfig(max_new_tokens=10, batch_size=3, **kwargs)
    a = VLMLocalizer(plain, config).generate(SUPPORTS, QUERIES)
    b = VLMLocalizer(instruct, config).generate(SUPPORTS, QUERIES)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.confidence for x in a] == pytest.approx([x.confidence for x in b], rel=1e-5)
    assert instruct.model.generation_config.repetition_penalty == 1.05  # restored after generation


def test_plain_generate_would_leak_the_checkpoint_config(checkpoints: tuple[Path, Path]) -> None:
    """The control for the test above: transformers' own call, as focuskit used to make it, differs."""
    plain, instruct = (load_vlm(p) for p in checkpoints)
    loc = VLMLocalizer(plain, VLMLocalizerConfig(prefix_cache=False))
    inputs = loc._encode([p.text for p in _prompts(loc)], [p.images for p in _prompts(loc)])
    old_style = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, "max_new_tokens": 24}
    leaked = instruct.model.generate(**inputs, **old_style)
    clean = plain.model.generate(**inputs, **old_style)
    assert not torch.equal(leaked, clean)  # repetition_penalty 1.05 changed the greedy answer
    config = build_generation_config(GenerationSettings(max_new_tokens=24), plain.processor.tokenizer, "qwen2_vl")
    assert torch.equal(generate(instruct.model, inputs, config), generate(plain.model, inputs, config))


def _prompts(loc: VLMLocalizer) -> list:
    from focuskit.models.vlms.prompts import build_prompt

    return [build_prompt(loc.bundle.processor, SUPPORTS, q, loc.prompt, family=loc.family) for q in QUERIES]


def test_sampling_distribution_is_softmax_of_logits_over_temperature(checkpoints: tuple[Path, Path]) -> None:
    """GRPO's ratio uses log_softmax(logits / T); the rollout must sample from exactly that (no penalty, no top-k)."""
    bundle = load_vlm(checkpoints[1])
    loc = VLMLocalizer(bundle, VLMLocalizerConfig(prefix_cache=False))
    prompt = _prompts(loc)[0]
    inputs = loc._encode([prompt.text], [prompt.images])
    settings = GenerationSettings(max_new_tokens=1, do_sample=True, temperature=0.7)
    config = build_generation_config(settings, bundle.processor.tokenizer, "qwen2_vl", output_scores=True)
    config.suppress_tokens = None  # compare the raw distribution (vision tokens are otherwise set to -inf)
    out = generate(bundle.model, inputs, config, seed=0)
    with torch.no_grad():
        logits = bundle.model(**inputs).logits[:, -1].float()
    expected = torch.log_softmax(logits / 0.7, dim=-1)
    assert torch.allclose(torch.log_softmax(out.scores[0].float(), dim=-1), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"num_return_sequences": 0}, "num_return_sequences must be >= 1"),
        ({"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_bad_generation_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GenerationSettings(**kwargs)


def test_concurrent_generations_restore_the_checkpoint_config(tiny: VLMBundle) -> None:
    """Two overlapping generations on one model (server threads): the checkpoint's config comes back once both end."""
    from focuskit.models.vlms.generation import checkpoint_generation_defaults_disabled

    original = tiny.model.generation_config
    first, second = (
        checkpoint_generation_defaults_disabled(tiny.model),
        checkpoint_generation_defaults_disabled(tiny.model),
    )
    first.__enter__()
    second.__enter__()
    assert tiny.model.generation_config is not original
    first.__exit__(None, None, None)  # the first to finish must not restore while the second still generates
    assert tiny.model.generation_config is not original
    second.__exit__(None, None, None)
    assert tiny.model.generation_config is original
