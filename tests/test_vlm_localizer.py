"""VLMLocalizer: prefix KV-cache reuse is exact, batching is invisible, answers parse, CLI localize/eval work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.core.box import Box, iou
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import ConfigError
from focuskit.data.episodes_jsonl import write_episodes
from focuskit.localizers import create_localizer
from focuskit.localizers.vlm import VLMLocalizer, VLMLocalizerConfig
from focuskit.models.vlms import PromptConfig, VLMBundle, build_tiny_vlm, collate_encoded, encode_episode
from focuskit.models.vlms.tiny import TinyVLMConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


SUPPORTS = [Support(_noise(64 + 12 * i, 48 + 8 * i, i), Box(3 + i, 4, 30 + i, 40)) for i in range(4)]
# Different sizes, so the queries' token counts differ and batches need padding between prefix and suffix.
QUERIES = [_noise(56 + 20 * i, 56 + 11 * (i % 3), 100 + i) for i in range(5)]


@pytest.fixture(scope="module")
def tiny() -> VLMBundle:
    return build_tiny_vlm()


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_prefix_reuse_matches_generation_from_scratch(family: str) -> None:
    bundle = build_tiny_vlm(TinyVLMConfig(family=family))  # type: ignore[arg-type]
    common = {"batch_size": 2, "max_new_tokens": 8}
    cached = VLMLocalizer(bundle, VLMLocalizerConfig(prefix_cache=True, **common)).generate(SUPPORTS, QUERIES)
    scratch = VLMLocalizer(bundle, VLMLocalizerConfig(prefix_cache=False, **common)).generate(SUPPORTS, QUERIES)
    single = VLMLocalizer(bundle, VLMLocalizerConfig(prefix_cache=False, batch_size=1, max_new_tokens=8))
    alone = single.generate(SUPPORTS, QUERIES)
    assert len(cached) == len(QUERIES)
    for a, b, c in zip(cached, scratch, alone, strict=True):
        assert a.token_ids == b.token_ids == c.token_ids
        assert len(a.token_ids) == 8  # a random model never stops early, so all 8 tokens are compared
        assert a.confidence == pytest.approx(c.confidence, rel=1e-4)
    # Different queries get different answers: the comparison is not between constant outputs.
    assert len({a.token_ids for a in cached}) > 1


def test_llava_batched_generation_matches_one_by_one() -> None:
    """LLaVA-OneVision has no prefix reuse (its processor sizes a lone query image differently) but batches."""
    bundle = build_tiny_vlm(TinyVLMConfig(family="llava_onevision"))
    batched = VLMLocalizer(bundle, VLMLocalizerConfig(batch_size=3, max_new_tokens=6)).generate(SUPPORTS, QUERIES)
    alone = VLMLocalizer(bundle, VLMLocalizerConfig(batch_size=1, max_new_tokens=6)).generate(SUPPORTS, QUERIES)
    assert [a.token_ids for a in batched] == [a.token_ids for a in alone]
    assert len({a.token_ids for a in batched}) > 1


def _count_vision_images(bundle: VLMBundle) -> list[int]:
    counts: list[int] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        counts.append(int(kwargs["grid_thw"].shape[0]))

    bundle.model.model.visual.register_forward_pre_hook(hook, with_kwargs=True)
    return counts


def test_prefix_reuse_encodes_each_support_once() -> None:
    bundle = build_tiny_vlm()
    counts = _count_vision_images(bundle)
    VLMLocalizer(bundle, VLMLocalizerConfig(batch_size=2, max_new_tokens=2)).generate(SUPPORTS, QUERIES)
    assert sum(counts) == len(SUPPORTS) + len(QUERIES)
    counts.clear()
    VLMLocalizer(bundle, VLMLocalizerConfig(batch_size=2, max_new_tokens=2, prefix_cache=False)).generate(
        SUPPORTS, QUERIES
    )
    assert sum(counts) == len(QUERIES) * (len(SUPPORTS) + 1)


def test_unreadable_answer_is_a_miss_with_its_text(tiny: VLMBundle) -> None:
    pred = VLMLocalizer(tiny, VLMLocalizerConfig(max_new_tokens=6)).localize(SUPPORTS[:2], QUERIES[0])
    assert pred.box is None and pred.score == 0.0
    assert pred.meta["parse_failed"] and "no box found" in pred.meta["parse"]
    assert isinstance(pred.meta["text"], str)


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny: VLMBundle) -> None:
    cfg = VLMLocalizerConfig(do_sample=True, temperature=1.5, seed=7, max_new_tokens=8)
    state = torch.random.get_rng_state()
    a = VLMLocalizer(tiny, cfg).generate(SUPPORTS[:1], QUERIES[:2])
    b = VLMLocalizer(tiny, cfg).generate(SUPPORTS[:1], QUERIES[:2])
    assert torch.equal(state, torch.random.get_rng_state())
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    greedy = VLMLocalizer(tiny, VLMLocalizerConfig(max_new_tokens=8)).generate(SUPPORTS[:1], QUERIES[:2])
    assert [x.token_ids for x in a] != [x.token_ids for x in greedy]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [("batch_size: 0\n", "batch_size"), ("beams: 4\n", "unknown key 'beams'"), ("top_p: 2\n", "top_p")],
)
def test_bad_localizer_config(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "vlm.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        create_localizer("vlm", model=str(tmp_path), config=path)


def test_engine_needs_a_model() -> None:
    with pytest.raises(ConfigError, match="--model"):
        create_localizer("vlm")
    with pytest.raises(ConfigError, match="tau"):
        create_localizer("vlm", model="x", tau=0.5)


# --- end to end on a tiny model taught two episodes ------------------------------------------------------------


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Episode]]:
    """A tiny model overfit on two episodes (one present, one absent) and saved, plus those episodes on disk."""
    root = tmp_path_factory.mktemp("taught")
    paths = []
    for i, img in enumerate([*(s.image for s in SUPPORTS[:2]), QUERIES[0], QUERIES[1]]):
        paths.append(root / f"{i}.png")
        img.save(paths[-1])  # type: ignore[union-attr]
    supports = (Support(paths[0], SUPPORTS[0].box), Support(paths[1], SUPPORTS[1].box))
    episodes = [
        Episode("present", supports, paths[2], Box(10, 12, 40, 44)),
        Episode("absent", supports, paths[3], None),
    ]
    write_episodes(episodes, root / "episodes.jsonl")

    bundle = build_tiny_vlm()
    # A short instruction keeps the sequences (and so this training) small; "not present" answers are enabled.
    bundle.prompt = PromptConfig(
        instruction="Find it.", allow_absent=True, min_pixels=bundle.prompt.min_pixels, max_pixels=56 * 56
    )
    batch = collate_encoded(
        [encode_episode(bundle.processor, ep, with_answer=True, prompt=bundle.prompt) for ep in episodes]
    )
    inputs = {k: v for k, v in batch.items() if k not in ("box_token_mask", "query_image_mask")}
    model = bundle.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.03:
            break
    assert loss.item() < 0.03, f"the tiny model did not learn two answers (loss {loss.item():.3f})"
    model.eval()
    return bundle.save(root / "model"), episodes


def test_taught_model_localizes_and_rejects(taught: tuple[Path, list[Episode]]) -> None:
    model_dir, episodes = taught
    loc = create_localizer("vlm", model=str(model_dir))
    assert isinstance(loc, VLMLocalizer) and loc.prompt.allow_absent
    present, absent = episodes
    pred = loc.localize(present.supports, present.query_image)
    assert iou(pred.box, present.query_box) > 0.95
    assert 0.5 < pred.score <= 1.0 and pred.meta["form"] == "native"
    rejected = loc.localize(absent.supports, absent.query_image)
    assert rejected.box is None and rejected.meta["form"] == "absent" and rejected.score > 0.5
    # Episodes sharing supports are grouped (one prefix) and come back in input order.
    preds = loc.localize_episodes([absent, present, absent])
    assert [p.box is None for p in preds] == [True, False, True]


def test_cli_localize_and_eval_with_vlm_engine(taught: tuple[Path, list[Episode]], tmp_path: Path) -> None:
    model_dir, episodes = taught
    present = episodes[0]
    runner = CliRunner()
    args = ["localize", "--engine", "vlm", "--model", str(model_dir), "--query", str(present.query_image), "--json"]
    for s in present.supports:
        args += ["--support", str(s.image), "--box", ",".join(str(v) for v in s.box.as_list())]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.strip())  # progress bars go to stderr
    box = json.loads(line)["box"]
    assert iou(Box.from_xyxy(box), present.query_box) > 0.95

    out = tmp_path / "eval.json"
    jsonl = Path(str(present.query_image)).parent / "episodes.jsonl"
    result = runner.invoke(app, ["eval", "--engine", "vlm", "--model", str(model_dir), "--episodes", str(jsonl),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())["summary"][0]
    assert summary["episodes"] == 2 and summary["miou"] > 0.95 and summary["absent_rejected"] == 1.0
