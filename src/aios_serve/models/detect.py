"""Which kind of model a local path holds, read from its files (for `serve --model PATH`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

LocalKind = Literal["embedding", "cross-encoder", "generate"]

SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json")
LISTED_FILES = 8  # how many of a folder's files an error message names


class ModelLayoutError(ValueError):
    """The path does not exist, or nothing in it says which kind of model it is."""


def detect_kind(path: Path) -> LocalKind:
    """A `.gguf` file is `generate`; a folder is `embedding` (sentence-transformers, or a `*Model`
    architecture), `cross-encoder` (a one-label `*ForSequenceClassification`) or `generate`
    (a `*ForCausalLM`). Anything else raises ModelLayoutError naming what was found."""
    if not path.exists():
        raise ModelLayoutError(f"{path} does not exist")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "generate"
        raise ModelLayoutError(
            f"{path} is a file but not a .gguf file; give a GGUF file or a Hugging Face model folder"
        )
    markers = [name for name in SENTENCE_TRANSFORMERS_FILES if (path / name).is_file()]
    if markers:
        return "embedding"
    config = _read_config(path)
    architectures = [str(name) for name in config.get("architectures") or []]
    for architecture in architectures:
        if architecture.endswith("ForSequenceClassification"):
            labels = _label_count(config)
            if labels == 1:
                return "cross-encoder"
            raise ModelLayoutError(
                f"{path}: {architecture} has {labels} labels; a cross-encoder has one "
                "(pass --kind to serve it anyway)"
            )
    if any(name.endswith("ForCausalLM") for name in architectures):
        return "generate"
    if any(name.endswith("Model") for name in architectures):
        return "embedding"
    found = ", ".join(architectures) if architectures else "none"
    raise ModelLayoutError(
        f"{path}: cannot tell the model's kind from config.json (architectures: {found}); "
        "serve a *Model, *ForSequenceClassification (one label) or *ForCausalLM, or pass --kind"
    )


def _read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        names = sorted(entry.name for entry in folder.iterdir())
        shown = ", ".join(names[:LISTED_FILES]) + (", ..." if len(names) > LISTED_FILES else "")
        raise ModelLayoutError(
            f"{folder}: no config.json and no {' or '.join(SENTENCE_TRANSFORMERS_FILES)} "
            f"(found: {shown or 'an empty folder'})"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLayoutError(f"{config_path} is not readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelLayoutError(f"{config_path} is not a JSON object")
    return config


def _label_count(config: dict[str, Any]) -> int:
    """transformers' rule: id2label's size, else num_labels, else its default of 2."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    num_labels = config.get("num_labels")
    return int(num_labels) if isinstance(num_labels, int) else 2
