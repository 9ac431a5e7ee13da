"""Error hierarchy.

Everything a user can cause (bad file, bad box, bad config) raises a `FocusError` subclass with a message that
names what was expected, what came, and where. The CLI prints those as one line and exits 2; the server turns them
into 4xx responses. Any other exception is a bug and keeps its traceback.
"""


class FocusError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a bug."""


class ConfigError(FocusError):
    """A configuration file or option is invalid (unknown key, wrong type, inconsistent values)."""


class DatasetError(FocusError):
    """A dataset or episode file does not have the expected layout or content."""


class ImageError(FocusError):
    """An image is missing, cannot be decoded, or is too large."""


class ConceptNameError(FocusError):
    """A concept name breaks the shared rule (`focuskit.core.names`): empty, too long, '/', '.', control chars."""


class BoxError(FocusError):
    """A box is malformed, has zero area, or falls outside its image."""


class BoxParseError(FocusError):
    """A model's text answer could not be read as a box."""


class ModelError(FocusError):
    """A model path, architecture or runtime requirement is not usable here."""


class MemoryStoreError(FocusError):
    """A concept memory directory is corrupt, from another version, or was built with another encoder."""


class BackendError(FocusError):
    """A VLM backend is unreachable, timed out, or answered with something unusable."""


class VideoError(ImageError):
    """A video is missing, cannot be decoded, or an annotated video could not be written and read back."""
