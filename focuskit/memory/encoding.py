"""Which encoder a concept memory embeds with: the caller's choice, else the one stored with the memory.

Embeddings are tagged with the encoder that made them (`meta.encoder`, `meta.dim`) and, when it was built from a
name, how to rebuild it (`meta.encoder_spec`), so a memory reopened without an encoder argument embeds queries in
the same space as its views.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from focuskit.core.errors import ConfigError, MemoryStoreError
from focuskit.memory.config import EncoderSpec, default_encoder_spec
from focuskit.memory.database import MemoryDatabase

if TYPE_CHECKING:
    from focuskit.models.encoders import Encoder


def spec_of(arg: Encoder | EncoderSpec | str | None) -> EncoderSpec | None:
    """The spec an encoder argument names (None for a built `Encoder` or no argument)."""
    return EncoderSpec(arg) if isinstance(arg, str) else arg if isinstance(arg, EncoderSpec) else None


def spec_json(spec: EncoderSpec | None) -> str:
    """How to rebuild an encoder, stored with the memory ("" for an `Encoder` object passed in)."""
    return "" if spec is None else json.dumps({"name": spec.name, "options": spec.options})


class EncoderSlot:
    """The memory's encoder, built on first use from the argument, the stored spec or the default."""

    def __init__(self, arg: Encoder | EncoderSpec | str | None, db: MemoryDatabase) -> None:
        self.arg = arg
        self.db = db
        self.built: Encoder | None = None if isinstance(arg, (EncoderSpec, str, type(None))) else arg
        self.spec: EncoderSpec | None = None
        """The spec `built` came from (None for an `Encoder` passed in)."""

    @property
    def stored_name(self) -> str | None:
        return self.db.meta("encoder")

    def get(self) -> Encoder:
        if self.built is None:
            spec = spec_of(self.arg)
            from_memory = spec is None
            spec = spec or self.stored_spec()
            try:
                self.built = spec.create()
            except ConfigError as exc:
                if not from_memory:
                    raise
                raise MemoryStoreError(
                    f"concept memory {self.db.directory} was built with encoder {self.stored_name!r}, which cannot "
                    f"be rebuilt from its name ({exc}); pass that encoder explicitly"
                ) from None
            self.spec = spec
        return self.built

    def set(self, encoder: Encoder, spec: EncoderSpec | None) -> None:
        self.arg, self.built, self.spec = encoder, encoder, spec

    def stored_spec(self) -> EncoderSpec:
        raw = self.db.meta("encoder_spec")
        if raw:
            try:
                data = json.loads(raw)
                return EncoderSpec(name=data["name"], options=dict(data.get("options") or {}))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise MemoryStoreError(f"concept memory {self.db.directory} is corrupt: encoder spec {raw!r}") from None
        tag = self.stored_name
        return EncoderSpec(name=tag) if tag is not None else default_encoder_spec()

    def check(self, encoder: Encoder) -> None:
        """Refuse to mix encoders: `encoder` must make the stored tag and dimension (or the memory be empty)."""
        stored = self.stored_name
        if stored is not None and stored != encoder.name:
            raise MemoryStoreError(
                f"concept memory {self.db.directory} holds embeddings from encoder {stored!r}, not "
                f"{encoder.name!r}: mixing encoders is refused; re-embed the memory first "
                "(focuskit concept reembed --encoder ...)"
            )
        dim = self.db.dim()
        if dim is not None and stored == encoder.name and dim != encoder.dim:
            raise MemoryStoreError(
                f"concept memory {self.db.directory} stores {dim}-dim embeddings but encoder {encoder.name!r} makes "
                f"{encoder.dim}-dim ones"
            )
