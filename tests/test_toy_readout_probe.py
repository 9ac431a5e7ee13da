"""The read-out probe's episodes (benchmarks/toy/readout_probe.py): what each support option shows the model, and
that the held-out pick rate is the position-balanced one the docs report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.toy.readout_probe import GRID, ProbeModel, draw_views, episodes, pick_rate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_pool(instances: int = 3) -> dict[str, torch.Tensor]:
    """Token tensors shaped as `load_pool`'s; object 0 always in the top-left quarter, object 1 bottom-right."""
    boxes = torch.tensor([[0.0, 0.0, 50.0, 50.0], [60.0, 60.0, 110.0, 110.0]])
    return {
        "frames": torch.randn(instances, 6, GRID * GRID, 96),
        "boxes": boxes.expand(instances, 6, 2, 4).clone(),
        "alone": torch.randn(instances, 2, 3, GRID * GRID, 96),
    }


def test_scene_supports_mark_exactly_the_target_cells_and_solo_supports_mark_none() -> None:
    pool = fake_pool()
    inst, role = torch.tensor([0, 1]), torch.tensor([0, 1])
    views, query = torch.tensor([[0, 1], [2, 3]]), torch.tensor([5, 5])
    scene = episodes(pool, inst, role, views, query, scene=True)
    assert scene.support.shape == (2, 2, GRID * GRID, 96)
    assert torch.equal(scene.support[1, 1], pool["frames"][1, 3])
    top_left = torch.zeros(GRID, GRID, dtype=torch.bool)
    top_left[:2, :2] = True
    assert torch.equal(scene.marked[0, 0], top_left.flatten())  # object 0's box covers cells (0..1, 0..1)
    assert torch.equal(scene.marked[1, 0], top_left.flip(0, 1).flatten())  # object 1: the other corner
    assert scene.label.tolist() == [0, 15]  # the cell holding each target's centre: (25, 25) and (85, 85)
    solo = episodes(pool, inst, role, torch.tensor([[0, 1], [1, 2]]), query, scene=False)
    assert torch.equal(solo.support[1, 1], pool["alone"][1, 1, 2]) and not solo.marked.any()


def test_drawn_support_views_are_distinct_and_never_the_query_frame() -> None:
    g = torch.Generator().manual_seed(0)
    views, query = draw_views(64, 4, scene=True, g=g)
    assert views.shape == (64, 4)
    assert all(len(set(row.tolist())) == 4 for row in views)
    assert not (views == query[:, None]).any()


def test_pick_rate_is_balanced_so_an_answer_that_ignores_the_supports_scores_half() -> None:
    """A model that always names the same cell picks the target only when that object is the target: 50%."""
    model = ProbeModel(hidden=16, layers=1, heads=2, readout="cls", filler=3)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[0] = 1.0  # always cell 0, inside object 0
    assert pick_rate(model, fake_pool(4), shots=2, scene=True) == pytest.approx(0.5)
