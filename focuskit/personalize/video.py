"""Personalization on video: sample frames, detect per frame, write an annotated MP4, ask a VLM about the clip.

Frames are decoded with PyAV and sampled either every n-th frame or k times per second (by timestamp, so variable
frame rate sources sample evenly in time). Each concept keeps one color for the whole video: colors are assigned
once from the memory for every concept seen in any frame. The annotated video is H.264 MP4 written to a temporary
file beside the target and renamed into place only after it has been decoded back frame by frame, so a video that
would not play is never left under the requested name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from focuskit.backends.base import GenerationOptions, VLMBackend
from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError, VideoError
from focuskit.core.media import VIDEO_SUFFIXES, is_video
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.config import SamplingConfig
from focuskit.personalize.detector import ConceptDetector, Detector
from focuskit.personalize.prompting import ConceptColor, PromptTemplate, annotate, assign_colors, prompt_text


@dataclass(frozen=True)
class Frame:
    index: int
    """Position of the frame in the decoded stream (0-based)."""
    time: float
    """Presentation time in seconds."""
    image: Image.Image


@dataclass(frozen=True)
class FrameDetections:
    index: int
    time: float
    detections: Detections

    def to_json(self) -> dict[str, object]:
        return {"frame": self.index, "time": round(self.time, 3), "detections": self.detections.to_json()}


@dataclass
class VideoResult:
    frames: list[FrameDetections]
    source_fps: float
    output_fps: float
    colors: dict[str, ConceptColor] = field(default_factory=dict)
    output: Path | None = None

    def concepts(self) -> list[str]:
        """Concepts detected in any frame, in order of first appearance."""
        return list(dict.fromkeys(n for f in self.frames for n in f.detections.names))


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"cannot decode video {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


def source_fps(path: str | Path) -> float:
    with contextlib.closing(_open(Path(path))) as container:
        rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
        return float(rate) if rate else 25.0


def read_frames(path: str | Path, sampling: SamplingConfig | None = None) -> Iterator[Frame]:
    """Sampled frames of the first video stream, in order. `VideoError` if the file cannot be decoded."""
    sampling = sampling or SamplingConfig()
    path = Path(path)
    container = _open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    emitted = 0
    next_time = 0.0
    try:
        for i, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else i / fps
            if sampling.every_n is not None:
                take = i % sampling.every_n == 0
            else:
                take = t + 1e-6 >= next_time
                if take:
                    next_time = t + 1.0 / float(sampling.per_second)  # type: ignore[arg-type]
            if not take:
                continue
            yield Frame(i, t, frame.to_image().convert("RGB"))
            emitted += 1
            if emitted >= sampling.max_frames:
                break
    except (av.error.FFmpegError, ValueError) as exc:
        raise VideoError(f"cannot decode video {path} (after {emitted} sampled frames): {exc}") from None
    finally:
        container.close()
    if emitted == 0:
        raise VideoError(f"no frame could be decoded from video {path}")


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """H.264 with 4:2:0 chroma needs even dimensions."""
    return size[0] - size[0] % 2 or 2, size[1] - size[1] % 2 or 2


class VideoWriter:
    """H.264 MP4 written to a temporary file; `close()` verifies it decodes and renames it into place."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".mp4", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._container = av.open(tmp, "w", format="mp4")
        self._fps = Fraction(fps).limit_denominator(1000)
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: Image.Image) -> None:
        if self._stream is None:
            self._size = _even(image.size)
            self._stream = self._container.add_stream("libx264", rate=self._fps)
            self._stream.width, self._stream.height = self._size
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "23", "preset": "veryfast"}
        assert self._size is not None
        img = image.convert("RGB")
        if img.size != self._size:
            img = img.crop((0, 0, *self._size)) if img.width >= self._size[0] else img.resize(self._size)
        for packet in self._stream.encode(av.VideoFrame.from_image(img)):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush, check the file decodes to the frames written, then move it to `path`."""
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
            if self.frames == 0:
                raise VideoError(f"no frames were written to {self.path}")
            decoded = count_frames(self._tmp)
            if decoded != self.frames:
                raise VideoError(f"annotated video decodes to {decoded} frames, {self.frames} were written")
            os.replace(self._tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, OSError, ValueError):
            self._container.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


def count_frames(path: str | Path) -> int:
    """Frames decodable from `path` (decodes every frame: proof the video plays)."""
    with contextlib.closing(_open(Path(path))) as container:
        try:
            return sum(1 for _ in container.decode(container.streams.video[0]))
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode video {path}: {exc}") from None


def detect_video(
    path: str | Path,
    detector: Detector,
    *,
    sampling: SamplingConfig | None = None,
    output: str | Path | None = None,
    template: PromptTemplate | None = None,
    keep_frames: int = 0,
    progress: bool = True,
    on_frame: Callable[[Frame, Detections], None] | None = None,
) -> tuple[VideoResult, list[Image.Image]]:
    """Detect the memory's concepts in sampled frames; optionally write the annotated video to `output`.

    Returns the per-frame results and up to `keep_frames` annotated frames spread over the clip (for a VLM). Colors
    are stable: a concept gets its memory color in every frame (clashes resolved once, in order of appearance).
    """
    sampling = sampling or SamplingConfig()
    template = template or PromptTemplate(legend=True)
    fps_in = source_fps(path)
    fps_out = (
        fps_in / sampling.every_n if sampling.every_n is not None else min(float(sampling.per_second or 1), fps_in)
    )
    writer = VideoWriter(output, fps_out) if output is not None else None
    memory = detector.memory
    colors: dict[str, ConceptColor] = {}
    results: list[FrameDetections] = []
    kept: list[tuple[int, Image.Image]] = []
    stride = 1
    try:
        for frame in tqdm(read_frames(path, sampling), desc="frames", unit="frame", disable=not progress):
            dets = detector.detect(frame.image)
            new = [n for n in dets.names if n not in colors]
            if new:
                colors = assign_colors(memory, [*colors, *new])
            results.append(FrameDetections(frame.index, frame.time, dets))
            annotated = annotate(frame.image, dets, colors, template=template) if len(dets) else frame.image
            if on_frame is not None:
                on_frame(frame, dets)
            if writer is not None:
                writer.write(annotated)
            if keep_frames and (len(results) - 1) % stride == 0:
                kept.append((len(results) - 1, annotated))
                if len(kept) > 4 * keep_frames:  # keep every (2 * stride)-th frame: bounded memory, still even
                    stride *= 2
                    kept = [(i, im) for i, im in kept if i % stride == 0]
        out_path = writer.close() if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if keep_frames and kept:
        picks = np.unique(np.linspace(0, len(kept) - 1, min(keep_frames, len(kept))).round().astype(int))
        frames_out = [kept[i][1] for i in picks]
    else:
        frames_out = []
    return VideoResult(results, fps_in, fps_out, colors, out_path), frames_out


@dataclass
class VideoAnswer:
    text: str
    result: VideoResult
    prompt: str


def ask_video(
    path: str | Path,
    question: str,
    memory: ConceptMemory,
    backend: VLMBackend,
    *,
    detector: Detector | None = None,
    sampling: SamplingConfig | None = None,
    frames_to_backend: int = 8,
    output: str | Path | None = None,
    template: PromptTemplate | None = None,
    options: GenerationOptions | None = None,
) -> VideoAnswer:
    """Answer a question about a video, naming the memory's concepts found in it.

    A video-capable backend gets up to `frames_to_backend` annotated frames as one clip; others get at most 4 of
    them as separate images. With no concept found anywhere, the question goes through unchanged.
    """
    if not question.strip():
        raise ConfigError("the question is empty: ask something about the video")
    detector = detector or ConceptDetector(memory)
    template = template or PromptTemplate()
    n = frames_to_backend if backend.supports_video else min(4, frames_to_backend)
    result, frames = detect_video(path, detector, sampling=sampling, output=output, template=template, keep_frames=n)
    text = prompt_text(question.strip(), list(result.colors.values()), memory, template, medium="video")
    answer = backend.generate(frames, text, options=options, video=backend.supports_video and len(frames) > 1)
    return VideoAnswer(answer, result, text)


__all__ = [
    "VIDEO_SUFFIXES", "Frame", "FrameDetections", "SamplingConfig", "VideoAnswer", "VideoResult", "VideoWriter",
    "ask_video", "count_frames", "detect_video", "is_video", "read_frames", "source_fps",
]  # fmt: skip
