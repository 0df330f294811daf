"""What an encoder is, as data: the facts ``Encoder.describe()`` returns and manifests record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class EncoderFacts:
    """Model, files' sha256 and the settings that decide the vectors; ``to_dict()`` for JSON and manifests."""

    model: str
    source: str
    path: str
    revision: str | None
    model_type: str
    dim: int
    pooling: str
    normalize: bool
    dense: tuple[int, ...]  # each Dense layer's width
    matryoshka: int | None
    similarity: str
    prompt: str | None  # the default prompt's name
    prompts: dict[str, str]
    max_length: int
    batch_size: int
    long_text: str
    backend: str
    device: str
    precision: str
    sha256: dict[str, str]
    max_chars: int | None = None
    auto_choice: dict[str, Any] | None = None  # backend='auto': what was measured and chosen

    def to_dict(self) -> dict[str, Any]:
        """The facts as a JSON-ready dict (the keys manifests and indexes record)."""
        facts = dataclasses.asdict(self)
        facts["dense"] = list(self.dense)
        return facts
