"""The CNN-eyed Qwen2-VL: a real Qwen2-VL whose `model.visual` is the frozen ImageNet MobileNetV2 + a projector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from focuskit.core.errors import ConfigError
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms import VLMBundle, encode_episode, load_vlm
from focuskit.models.vlms.cnn_qwen2_vl import CNNVLMConfig, build_cnn_vlm, unpatchify, vision_tower
from focuskit.models.vlms.factory import inspect_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle() -> VLMBundle:
    return build_cnn_vlm(CNNVLMConfig(num_layers=2, max_pixels=112 * 112))


@pytest.fixture(scope="module")
def episodes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SynthConfig(episodes=4, shots=2, image_size=56, objects=2, seed=3, backgrounds=("gradient",))
    return write_synth_dataset(config, tmp_path_factory.mktemp("synth"), progress=False)


def _image(seed: int = 0, size: tuple[int, int] = (112, 84)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _pixels(bundle: VLMBundle, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    out = bundle.processor.image_processor(images=images, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def test_is_a_qwen2_vl_with_a_frozen_cnn_and_a_trainable_projector_and_position_embedding(bundle: VLMBundle) -> None:
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    assert isinstance(bundle.model, Qwen2VLForConditionalGeneration)
    assert isinstance(bundle.processor, Qwen2VLProcessor) and bundle.family == "qwen2_vl"
    tower = vision_tower(bundle.model)
    assert tower is bundle.model.model.visual and tower.spatial_merge_size == 2
    trainable = {n.split(".")[2] for n, p in bundle.model.named_parameters() if p.requires_grad and ".visual." in n}
    assert trainable == {"projector", "position"}
    assert not any(p.requires_grad for p in tower.trunk.parameters())
    bundle.model.train()
    assert not tower.trunk.training and tower.projector.training  # BatchNorm statistics never move
    bundle.model.eval()


def test_unpatchify_inverts_the_processor(bundle: VLMBundle) -> None:
    images = [_image(0, (112, 84)), _image(1, (56, 56))]
    pixels, grid = _pixels(bundle, images)
    ip = bundle.processor.image_processor
    mean, std = torch.tensor(ip.image_mean).view(3, 1, 1), torch.tensor(ip.image_std).view(3, 1, 1)
    for img, rec in zip(images, unpatchify(pixels, grid, 14, 2), strict=True):
        resized = img.resize((rec.shape[2], rec.shape[1]), Image.BICUBIC)
        raw = rec * std + mean
        assert raw.shape[1:] == (resized.height, resized.width)
        # the processor's own resize differs from PIL's by rounding; the layout must be exact
        truth = torch.tensor(np.asarray(resized)).permute(2, 0, 1).float() / 255
        assert (raw - truth).abs().mean() < 0.02


def test_features_are_the_imagenet_cnn_pooled_row_major_onto_the_merged_grid(bundle: VLMBundle) -> None:
    tower = vision_tower(bundle.model)
    pixels, grid = _pixels(bundle, [_image(2, (112, 84))])
    out = bundle.model.model.get_image_features(pixels, grid)
    (h, w) = grid[0, 1:].tolist()
    assert out.pooler_output[0].shape == (h * w // 4, bundle.model.config.text_config.hidden_size)
    (img,) = unpatchify(pixels, grid, 14, 2)
    ip = bundle.processor.image_processor
    raw = img * torch.tensor(ip.image_std).view(3, 1, 1) + torch.tensor(ip.image_mean).view(3, 1, 1)
    x = (raw - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    x = F.interpolate(x[None], scale_factor=2.0, mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = F.adaptive_avg_pool2d(tower.trunk(x), (h // 2, w // 2))[0].flatten(1).T
    tower.clear_cache()
    got = tower(pixels, grid).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-4)


def test_frozen_features_are_cached_per_image(bundle: VLMBundle) -> None:
    tower = vision_tower(bundle.model)
    tower.clear_cache()
    pixels, grid = _pixels(bundle, [_image(3), _image(4)])
    first = tower(pixels, grid).pooler_output
    assert (tower.cache_hits, tower.cache_misses) == (0, 2)
    again = tower(pixels, grid).pooler_output
    assert (tower.cache_hits, tower.cache_misses) == (2, 2) and torch.equal(first, again)
    first.sum().backward()  # the projector still gets gradients through cached features
    assert tower.projector[1].weight.grad is not None
    bundle.model.zero_grad()


def test_saves_and_loads_through_load_vlm(bundle: VLMBundle, tmp_path: Path, episodes_file: Path) -> None:
    directory = bundle.save(tmp_path / "cnn")
    assert inspect_checkpoint(directory).family == "qwen2_vl"
    loaded = load_vlm(directory, dtype="float32")
    assert type(loaded.model).__name__ == "Qwen2VLCNNForConditionalGeneration"
    episode = load_episodes(episodes_file)[0]
    enc = encode_episode(loaded.processor, episode, with_answer=True, prompt=loaded.prompt)
    inputs = {k: v for k, v in enc.inputs.items()}
    with torch.no_grad():
        a = bundle.model(**inputs).logits
        b = loaded.model(**inputs).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="backbone must be one of"):
        CNNVLMConfig(backbone="resnet")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="family must be 'qwen2_vl'"):
        CNNVLMConfig(family="qwen2_5_vl")


def test_sft_with_attention_loss_then_grpo(tmp_path: Path, episodes_file: Path) -> None:
    """The FOCUS recipe end to end on the new family: full-FT SFT with the attention loss, then LoRA GRPO."""
    from focuskit.training.grpo_config import FocusGRPOConfig
    from focuskit.training.run_grpo import train_grpo
    from focuskit.training.run_sft import train_sft
    from focuskit.training.sft_config import AttentionLossConfig, SFTConfig

    base = build_cnn_vlm(CNNVLMConfig(num_layers=2, min_pixels=56 * 56, max_pixels=56 * 56))
    trunk_before = {k: v.clone() for k, v in vision_tower(base.model).trunk.state_dict().items()}
    directory = base.save(tmp_path / "base")
    sft = train_sft(
        SFTConfig(
            model=str(directory),
            data=[str(episodes_file)],
            lora=None,
            output_dir=str(tmp_path / "sft"),
            attention_loss=AttentionLossConfig(enabled=True, layers="first_k", k=1),
            max_steps=2,
            per_device_train_batch_size=2,
            learning_rate=1e-3,
            save_strategy="no",
            disable_tqdm=True,
            report_to="none",
            logging_steps=1,
        )
    )
    assert sft.series("attn_loss") and sft.series("lm_loss")
    trained = load_vlm(sft.final_model, dtype="float32")
    tower = vision_tower(trained.model)
    assert all(torch.equal(v, trunk_before[k]) for k, v in tower.trunk.state_dict().items())
    grpo = train_grpo(
        FocusGRPOConfig(
            model=str(sft.final_model),
            data=[str(episodes_file)],
            output_dir=str(tmp_path / "grpo"),
            max_steps=1,
            per_device_train_batch_size=2,
            num_generations=2,
            max_completion_length=6,
            save_merged=True,
            save_strategy="no",
            disable_tqdm=True,
            report_to="none",
        )
    )
    assert load_vlm(grpo.final_model).family == "qwen2_vl"


def test_prefix_cache_and_explain(tmp_path: Path, episodes_file: Path) -> None:
    """Support-prefix KV reuse gives the same answers as generation from scratch; `explain` reads its attention."""
    from focuskit.analysis.attention import explain_episode
    from focuskit.localizers.vlm import VLMLocalizer, VLMLocalizerConfig

    directory = build_cnn_vlm(CNNVLMConfig(num_layers=2, min_pixels=56 * 56, max_pixels=56 * 56)).save(tmp_path / "m")
    episode = load_episodes(episodes_file)[0]
    queries = [ep.query_image for ep in load_episodes(episodes_file)]
    answers = {}
    for cached in (True, False):
        config = VLMLocalizerConfig(batch_size=2, max_new_tokens=6, prefix_cache=cached)
        localizer = VLMLocalizer.from_pretrained(directory, config)
        answers[cached] = [a.text for a in localizer.generate(episode.supports, queries)]
    assert answers[True] == answers[False]
    eager = load_vlm(directory, dtype="float32", attn_implementation="eager")
    report = explain_episode(eager, episode, answer="target", layers="all")
    assert report is not None


def test_position_embedding_tells_identical_patches_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens whose CNN features are identical come out identical from the bare projector; the position embedding
    makes each say where in the image it is (what box text, in image coordinates, must be bound to)."""
    rows = {}
    for pos in (False, True):
        b = build_cnn_vlm(CNNVLMConfig(num_layers=1, max_pixels=112 * 112, position_embedding=pos, cnn_scale=1.0))
        tower = vision_tower(b.model)
        monkeypatch.setattr(tower, "cnn_features", lambda image, grid_hw: torch.ones(grid_hw[0] * grid_hw[1], 96))
        pixels, grid = _pixels(b, [_image(5, (112, 112))])
        with torch.no_grad():
            rows[pos] = tower(pixels, grid).pooler_output
    assert rows[False].shape == rows[True].shape == (16, 64)
    assert torch.allclose(rows[False], rows[False][:1].expand(16, -1))
    assert torch.cdist(rows[True], rows[True]).fill_diagonal_(1.0).min() > 1e-3  # all 16 tokens differ


def test_saved_features_are_reused_without_running_the_cnn(bundle: VLMBundle, tmp_path: Path) -> None:
    from focuskit.models.vlms.cnn_qwen2_vl import clear_shared_features, load_features, save_features

    tower = vision_tower(bundle.model)
    tower.clear_cache()
    pixels, grid = _pixels(bundle, [_image(7), _image(8)])
    with torch.no_grad():
        expected = tower(pixels, grid).last_hidden_state
    assert save_features(bundle.model, tmp_path / "f.pt") == 2
    tower.clear_cache()
    try:
        assert load_features(tmp_path / "f.pt") == 2
        calls = []
        hook = tower.trunk.register_forward_hook(lambda *a: calls.append(1))
        with torch.no_grad():
            got = tower(pixels, grid).last_hidden_state
        hook.remove()
        assert calls == [] and torch.equal(got, expected)
    finally:
        clear_shared_features()
        tower.clear_cache()


def test_split_layout_keeps_position_out_of_the_content_dimensions(monkeypatch: pytest.MonkeyPatch) -> None:
    """position_dims > 0: the last n dimensions say where a token is and nothing else, the others what it shows."""
    b = build_cnn_vlm(CNNVLMConfig(num_layers=1, max_pixels=112 * 112, projector="linear", position_dims=18))
    tower = vision_tower(b.model)
    feats = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    pixels, grid = _pixels(b, [_image(5, (112, 112))])
    outs = []
    for scale in (1.0, 3.0):
        monkeypatch.setattr(tower, "cnn_features", lambda image, grid_hw, s=scale: feats * s + s)
        with torch.no_grad():
            outs.append(tower(pixels, grid).pooler_output)
    assert outs[0].shape == (16, 64)
    assert torch.allclose(outs[0][:, 46:], outs[1][:, 46:])  # other content, same position dimensions
    assert not torch.allclose(outs[0][:, :46], outs[0][:1, :46].expand(16, -1))
    # LayerNorm then orthonormal rows: a per-token affine change of the features does not move the content either
    assert torch.allclose(outs[0][:, :46], outs[1][:, :46], atol=1e-4)
    weight = tower.projector[1].weight
    assert torch.allclose(weight @ weight.T, torch.eye(46), atol=1e-5)


def test_frozen_projector_gets_no_gradient_even_after_a_save_load_round_trip(tmp_path: Path) -> None:
    """`from_pretrained` returns every parameter trainable; the freeze must survive it, or training would move it."""
    config = CNNVLMConfig(num_layers=1, max_pixels=112 * 112, projector="linear", freeze_projector=True,
                          position_dims=18)  # fmt: skip
    loaded = load_vlm(build_cnn_vlm(config).save(tmp_path / "m"), dtype="float32")
    tower = vision_tower(loaded.model)
    pixels, grid = _pixels(loaded, [_image(3, (112, 112))])
    assert not tower(pixels, grid).pooler_output.requires_grad  # nothing upstream of the LM to train
    assert all(p.grad is None for p in tower.parameters())
    trainable = build_cnn_vlm(CNNVLMConfig(num_layers=1, max_pixels=112 * 112, projector="linear"))
    t2 = vision_tower(trainable.model)
    t2(*_pixels(trainable, [_image(3, (112, 112))])).pooler_output.sum().backward()
    assert t2.projector[1].weight.grad is not None


def test_layout_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="projector"):
        CNNVLMConfig(projector="transformer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="position_dims"):
        CNNVLMConfig(position_dims=64)
    with pytest.raises(ConfigError, match="position_dims"):
        CNNVLMConfig(position_dims=8, position_embedding=False)
