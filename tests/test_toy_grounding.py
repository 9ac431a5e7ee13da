"""The toy's attention supervision (benchmarks/toy/grounding.py): which rows look where, the loss, and a training
stage through `train_sft`'s hooks that really moves the supervised head's attention onto the target."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.toy.grounding import (
    BOUND,
    PointerConfig,
    PointerDataset,
    collate_with_pointer,
    covered_cells,
    pointer_hooks,
    pointer_loss,
)
from focuskit.core.box import Box
from focuskit.core.errors import ConfigError
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms.cnn_qwen2_vl import CNNVLMConfig, build_cnn_vlm
from focuskit.models.vlms.encoding import image_token_runs
from focuskit.training.sft_data import SFTDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = build_cnn_vlm(CNNVLMConfig(num_layers=2, min_pixels=112 * 112, max_pixels=112 * 112))
    return bundle.save(tmp_path_factory.mktemp("pointer_model"))


@pytest.fixture(scope="module")
def episodes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SynthConfig(episodes=6, shots=2, image_size=112, objects=2, seed=5, backgrounds=("gradient",))
    return write_synth_dataset(config, tmp_path_factory.mktemp("pointer_synth"), progress=False)


def test_covered_cells_are_the_grid_cells_a_box_overlaps_row_major() -> None:
    cells = covered_cells(Box(0, 60, 30, 112), (112, 112), (4, 4)).reshape(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[2:, :2] = True  # rows 2-3 (y 56-112), columns 0-1 (x 0-56)
    assert torch.equal(cells, expected)
    assert covered_cells(Box(28, 28, 56, 56), (112, 112), (4, 4)).sum() == 1  # edges touching is not overlap


def test_rows_and_targets_of_an_encoded_episode(model_dir: Path, episodes_file: Path) -> None:
    hooks = pointer_hooks(PointerConfig(search_layer=1, bind_layer=0), str(model_dir))
    from focuskit.models.vlms import load_vlm

    bundle = load_vlm(model_dir)
    episodes = load_episodes(episodes_file)
    base = SFTDataset(episodes, bundle.processor, bundle.family, bundle.prompt, 2048)
    dataset = hooks.wrap_dataset(base)
    assert isinstance(dataset, PointerDataset)
    encoded, rows, targets = dataset[0]
    episode = episodes[0]
    ids = encoded.inputs["input_ids"][0]
    runs = image_token_runs(ids, dataset.image_token_id)
    labels = encoded.labels[0]
    # search rows: the positions predicting the answer up to its first digit, i.e. before any coordinate is written
    answer = (labels != -100).nonzero().flatten()
    predicted = [bundle.processor.tokenizer.decode([int(ids[p])]) for p in (rows == -1).nonzero().flatten() + 1]
    assert (rows == -1).nonzero().flatten()[0] + 1 == answer[0]
    assert predicted[-1].isdigit() and not any(c.isdigit() for t in predicted[:-1] for c in t)
    query = torch.zeros_like(rows, dtype=torch.bool)
    query[runs[-1][0] : runs[-1][1]] = True
    expected_query = covered_cells(episode.query_box, encoded.query_image_size, (4, 4))
    assert torch.equal(targets[query] == -1, expected_query) and not (targets[~query] == -1).any()
    for j, support in enumerate(episode.supports):
        in_run = torch.zeros_like(query)
        in_run[runs[j][0] : runs[j][1]] = True
        assert torch.equal(targets[in_run] == j + 1, covered_cells(support.box, (112, 112), (4, 4)))
        bound = (rows == j + 1).nonzero().flatten()  # the last token of support j's box text
        box_text = encoded.box_token_mask[0].nonzero().flatten()
        box_text = box_text[(box_text >= runs[j][1]) & (box_text < runs[j + 1][0])]
        assert bound.tolist() == [int(box_text.max())]
        assert int(targets[bound]) == BOUND  # the gather step's key: the token that bind fills with the target
    assert int((targets == BOUND).sum()) == len(episode.supports)
    batch = collate_with_pointer([dataset[0], dataset[1]])
    assert batch["pointer_row_group"].shape == batch["input_ids"].shape


def test_loss_is_minus_log_of_the_mass_on_the_targets() -> None:
    rows = torch.tensor([[0, -1, 1]])
    targets = torch.tensor([[-1, 1, 0]])
    attn = torch.zeros(1, 2, 3, 3)
    attn[0, 0, 1] = torch.tensor([0.25, 0.75, 0.0])  # search row 1: 0.25 on its target (key 0)
    attn[0, 0, 2] = torch.tensor([0.5, 0.5, 0.0])  # bind row 2: 0.5 on its target (key 1)
    cfg = PointerConfig(search_layer=1, bind_layer=0)
    loss, logged = pointer_loss([attn, attn], rows, targets, cfg)
    assert loss.item() == pytest.approx(-torch.log(torch.tensor(0.25)).item() - torch.log(torch.tensor(0.5)).item(),
                                        rel=1e-4)  # fmt: skip
    assert logged == pytest.approx({"pointer_search_mass": 0.25, "pointer_bind_mass": 0.5})
    no_bind, _ = pointer_loss([attn, attn], rows, targets, PointerConfig(search_layer=1, bind_layer=0, bind=False))
    assert no_bind.item() == pytest.approx(-torch.log(torch.tensor(0.25)).item(), rel=1e-4)


def test_gather_puts_the_search_rows_mass_on_the_bound_box_tokens() -> None:
    rows = torch.tensor([[0, 1, 0, -1]])
    targets = torch.tensor([[1, BOUND, -1, 0]])  # key 0: support cell; key 1: support's last box token; key 2: query
    attn = torch.zeros(1, 1, 4, 4)
    attn[0, 0, 1] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # bind row: all on its cell
    attn[0, 0, 3] = torch.tensor([0.0, 0.2, 0.8, 0.0])  # search row
    cfg = PointerConfig(search_layer=2, bind_layer=0, gather_layer=1)
    _, logged = pointer_loss([attn, attn, attn], rows, targets, cfg)
    assert logged == pytest.approx({"pointer_search_mass": 0.8, "pointer_bind_mass": 1.0, "pointer_gather_mass": 0.2})
    with pytest.raises(ConfigError, match="gather"):
        PointerConfig(search_layer=2, bind_layer=1, gather_layer=2)  # gather must come before search
    with pytest.raises(ConfigError, match="gather"):
        PointerConfig(search_layer=3, bind_layer=1, gather_layer=2, bind=False)  # nothing bound to gather


def test_layers_beyond_the_model_are_refused(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="2-layer model"):
        pointer_hooks(PointerConfig(search_layer=2), str(model_dir))
    with pytest.raises(ConfigError, match="layer 3 does not exist"):
        pointer_hooks(PointerConfig(search_layer=3, bind_layer=0, gather_layer=1), str(model_dir))
    with pytest.raises(ConfigError):
        PointerConfig(weight=-1.0)


def test_supervised_stage_moves_the_head_onto_the_target(model_dir: Path, episodes_file: Path, tmp_path: Path) -> None:
    from focuskit.training.run_sft import train_sft
    from focuskit.training.sft_config import AttentionLossConfig, SFTConfig

    cfg = PointerConfig(weight=5.0, search_layer=1, bind_layer=0)
    result = train_sft(
        SFTConfig(model=str(model_dir), data=[str(episodes_file)], lora=None, output_dir=str(tmp_path / "p"),
                  attention_loss=AttentionLossConfig(enabled=False), max_steps=30, per_device_train_batch_size=2,
                  learning_rate=1e-2, save_strategy="no", disable_tqdm=True, report_to="none", logging_steps=1),
        pointer_hooks(cfg, str(model_dir)),
    )  # fmt: skip
    search = result.series("pointer_search_mass")
    bind = result.series("pointer_bind_mass")
    assert len(search) == 30 and len(bind) == 30
    assert sum(search[-5:]) / 5 > 2 * sum(search[:5]) / 5
    assert sum(bind[-5:]) / 5 > 2 * sum(bind[:5]) / 5
    from focuskit.models.vlms import load_vlm

    assert load_vlm(result.final_model).family == "qwen2_vl"  # a checkpoint like any other
