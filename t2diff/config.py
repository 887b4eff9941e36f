"""Validated settings. Every process reads one YAML file (rendered by the Helm chart in production) into
pydantic-settings classes with ``extra="forbid"``, so a misspelled key fails at start-up instead of being ignored.

Each package defines its own section class (``streaming.settings.StreamSettings`` ...) by subclassing
:class:`Section`; environment variables override with the section's ``env_prefix`` (``T2DIFF_STREAM__LOG_DIR``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="Section")


class Section(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__", validate_default=True)

    @classmethod
    def load(cls: type[S], path: str | Path | None = None, key: str | None = None, **overrides: Any) -> S:
        """Build from an optional YAML file (optionally one top-level ``key`` of it), env, then ``overrides``."""
        values: dict[str, Any] = {}
        if path is not None:
            doc = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: expected a mapping at top level, got {type(doc).__name__}")
            if key is not None:
                doc = doc.get(key) or {}
            values.update(doc)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def read_yaml(path: str | Path) -> dict[str, Any]:
    doc = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping at top level")
    return doc
