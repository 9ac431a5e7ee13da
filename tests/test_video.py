"""Video: frame sampling, per-frame detection with stable colors, a playable annotated MP4, and asking about a clip.

The clip is a camera move (pan and zoom) over the real right-hand photo of the motorcycle stereo pair; the concept
is learned from the left-hand photo only.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.core.errors import ConfigError, VideoError
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.detector import ConceptDetector
from focuskit.personalize.samples import MOTORBIKE_BOX, sample_photos, write_sample_video
from focuskit.personalize.video import SamplingConfig, ask_video, count_frames, detect_video, read_frames
from focuskit.viz.draw import PALETTE


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_video(tmp_path_factory.mktemp("video") / "garage.mp4", frames=12, fps=6.0)


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> ConceptMemory:
    mem = ConceptMemory(tmp_path_factory.mktemp("video") / "memory")
    mem.add("motorbike", [sample_photos()["motorcycle_left"]], boxes=[MOTORBIKE_BOX], context="my Yamaha")
    return mem


def test_sample_clip_is_a_real_video(clip: Path) -> None:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (320, 216)
    assert count_frames(clip) == 12


@pytest.mark.parametrize(
    "sampling, expected",
    [
        (SamplingConfig(every_n=5), [0, 5, 10]),
        (SamplingConfig(per_second=2.0), [0, 3, 6, 9]),
        (SamplingConfig(every_n=1, max_frames=4), [0, 1, 2, 3]),
    ],
)
def test_frame_sampling(clip: Path, sampling: SamplingConfig, expected: list[int]) -> None:
    frames = list(read_frames(clip, sampling))
    assert [f.index for f in frames] == expected
    assert all(f.image.size == (320, 216) for f in frames)
    np.testing.assert_allclose([f.time for f in frames], [i / 6.0 for i in expected], atol=1e-3)


def test_detects_per_frame_and_writes_a_playable_annotated_video(
    clip: Path, memory: ConceptMemory, tmp_path: Path
) -> None:
    out = tmp_path / "annotated.mp4"
    result, kept = detect_video(
        clip, ConceptDetector(memory), sampling=SamplingConfig(every_n=4), output=out, keep_frames=2, progress=False
    )
    assert [f.index for f in result.frames] == [0, 4, 8]
    assert all(f.detections.names == ["motorbike"] for f in result.frames)
    assert result.output == out and count_frames(out) == 3 and result.output_fps == pytest.approx(1.5)
    color = PALETTE[memory.color("motorbike")]
    assert result.colors["motorbike"].rgb == color
    assert len(kept) == 2
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    originals = [np.asarray(f.image, dtype=int) for f in read_frames(clip, SamplingConfig(every_n=4))]
    for frame, original, f in zip(decoded, originals, result.frames, strict=True):
        x1, y1, x2, y2 = (round(v) for v in f.detections.xyxy[0])
        diff = np.abs(frame - original).sum(-1)
        band = np.concatenate([diff[y1 + 20 : y2 - 20, max(0, x1 - 1) : x1 + 2].ravel(),
                               diff[max(0, y1 - 1) : y1 + 2, x1 + 20 : x2 - 20].ravel()])  # fmt: skip
        inside = diff[y1 + 8 : y2 - 40, x1 + 8 : x2 - 8]
        assert band.mean() > 3 * inside.mean() and band.mean() > 40  # the box is drawn where it was detected
    assert not list(tmp_path.glob(".annotated*"))  # no temporary file left behind


class RecordingVideoBackend:
    name = "recording"
    supports_video = True

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, bool]] = []

    def generate(self, images, prompt, *, options=None, video=False) -> str:
        self.calls.append((len(images), prompt, video))
        return "Your Yamaha is parked in the garage."


def test_ask_about_a_video_names_the_concept(clip: Path, memory: ConceptMemory) -> None:
    backend = RecordingVideoBackend()
    answer = ask_video(
        clip, "Where is my motorbike?", memory, backend, sampling=SamplingConfig(every_n=4), frames_to_backend=3
    )
    n, prompt, video = backend.calls[0]
    assert answer.text == "Your Yamaha is parked in the garage."
    assert n == 3 and video is True
    assert "In this video, the entity enclosed in the" in prompt and '"motorbike"' in prompt and "my Yamaha" in prompt
    backend.supports_video = False
    ask_video(clip, "Where?", memory, backend, sampling=SamplingConfig(every_n=3), frames_to_backend=8)
    assert backend.calls[-1][0] == 4 and backend.calls[-1][2] is False  # a few frames, as separate images


def test_cli_detect_on_a_video(clip: Path, memory: ConceptMemory, tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    result = CliRunner().invoke(
        app, ["detect", str(clip), "--memory", str(memory.directory), "--every-n", "6", "--json", "--draw", str(out)]
    )
    assert result.exit_code == 0, result.output
    frames = json.loads(result.stdout)
    assert [f["frame"] for f in frames] == [0, 6]
    assert all(d["concept"] == "motorbike" and len(d["box"]) == 4 for f in frames for d in f["detections"])
    assert count_frames(out) == 2


def test_undecodable_or_missing_video_is_a_clear_error(tmp_path: Path, memory: ConceptMemory) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        list(read_frames(bad))
    with pytest.raises(VideoError, match="not found"):
        list(read_frames(tmp_path / "nope.mp4"))
    result = CliRunner().invoke(app, ["detect", str(bad), "--memory", str(memory.directory)])
    assert result.exit_code == 2 and "focuskit: error:" in result.output and "broken.mp4" in result.output


@pytest.mark.parametrize("kwargs", [{"every_n": 2, "per_second": 1.0}, {"every_n": 0}, {"per_second": -1.0}])
def test_bad_sampling(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SamplingConfig(**kwargs)
