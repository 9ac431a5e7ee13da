"""Models: feature encoders, class-agnostic box proposals and VLMs, each behind a `create_*` factory."""
