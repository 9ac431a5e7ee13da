"""PeKit: training-free personalization. Find the user's concepts, prompt a VLM visually, answer by name.

Imports are lazy per module (`focuskit.personalize.detector`, `.answer`, `.video`, ...): detection does not need
transformers, and answering over HTTP does not need torch models beyond the encoder.
"""

from focuskit.personalize.detector import DEFAULT_TAU, ConceptDetector, Detector, DetectorConfig, LocalizerDetector

__all__ = ["DEFAULT_TAU", "ConceptDetector", "Detector", "DetectorConfig", "LocalizerDetector"]
