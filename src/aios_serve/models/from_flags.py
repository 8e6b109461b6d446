"""Model specs built from `serve --model PATH` flags, for serving without a config file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aios_serve.config import ModelSpec
from aios_serve.models.detect import LocalKind, ModelLayoutError, detect_kind

ENGINES = ("auto", "openvino", "llama.cpp", "transformers", "onnx")
"""`auto`: a .gguf file runs on llama.cpp, a folder on transformers (torch)."""

T = TypeVar("T")


class ModelFlagError(ValueError):
    """The `--model` flags do not describe models that can be served."""


@dataclass(frozen=True)
class ModelFlags:
    """The `serve` flags that describe models; every list but `paths` may be empty."""

    paths: list[str]
    names: list[list[str]] = field(default_factory=list)
    """One entry per `--served-model-name`: a served name and then its aliases."""
    kinds: list[LocalKind] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    max_model_lens: list[int] = field(default_factory=list)


def specs_from_flags(flags: ModelFlags) -> list[ModelSpec]:
    """One spec per `--model`. Raises ModelFlagError or ModelLayoutError (both ValueErrors)."""
    count = len(flags.paths)
    names = _names_per_model(flags.names, count)
    kinds = _per_model(flags.kinds, count, "--kind")
    engines = _per_model(flags.engines, count, "--engine")
    lengths = _per_model(flags.max_model_lens, count, "--max-model-len")
    specs = [
        _spec(Path(raw).expanduser(), names[i], kinds[i], engines[i] or "auto", lengths[i])
        for i, raw in enumerate(flags.paths)
    ]
    seen: set[str] = set()
    for spec in specs:
        for name in spec.served_names:
            if name in seen:
                raise ModelFlagError(
                    f"served name {name!r} is used twice; give each --model its own --served-model-name"
                )
            seen.add(name)
    return specs


def default_served_name(path: Path) -> str:
    """The folder's name, or the file's name without `.gguf` (a symlink's own name)."""
    absolute = _absolute(path)
    if absolute.is_file() and absolute.suffix.lower() == ".gguf":
        return absolute.stem
    return absolute.name


def _absolute(path: Path) -> Path:
    """`path` made absolute and normalised, its symlinks kept."""
    return Path(os.path.abspath(path))


def engine_options(kind: LocalKind, path: Path, engine: str) -> dict[str, Any]:
    """The options (`engine` or `backend`) that run `kind` from `path` on `engine`; an error where
    none does."""
    if engine == "auto":
        return {}
    if kind == "generate":
        if engine in ("llama.cpp", "openvino"):
            if not path.is_file():
                raise ModelFlagError(
                    f"--engine {engine} reads a .gguf file; {path} is a folder "
                    "(--engine transformers serves a Hugging Face folder)"
                )
            return {"engine": engine}
        if engine == "transformers":
            if not path.is_dir():
                raise ModelFlagError(
                    f"--engine transformers reads a Hugging Face folder; {path} is a file "
                    "(--engine llama.cpp serves a .gguf file)"
                )
            return {"engine": "transformers"}
        raise ModelFlagError(f"--engine {engine} serves embedding and cross-encoder models, not generate")
    if engine == "transformers":
        return {"backend": "torch"}
    if engine == "onnx":
        return {"backend": "onnx"}
    raise ModelFlagError(
        f"--engine {engine} serves generate models only; {kind} models run on transformers or onnx"
    )


def _spec(
    path: Path, names: list[str] | None, kind: LocalKind | None, engine: str, max_model_len: int | None
) -> ModelSpec:
    if not path.exists():
        raise ModelLayoutError(f"{path} does not exist")
    kind = kind or detect_kind(path)
    if kind != "generate" and not path.is_dir():
        raise ModelFlagError(f"{kind} models are served from a Hugging Face folder; {path} is a file")
    name, *aliases = names or [default_served_name(path)]
    return ModelSpec(
        name=name,
        aliases=aliases,
        kind=kind,
        path=str(_absolute(path)),
        max_model_len=max_model_len,
        options=engine_options(kind, path, engine),
    )


def _names_per_model(names: list[list[str]], count: int) -> list[list[str] | None]:
    """With one model every name is its own (the first served, the rest aliases); with several,
    either none is named or each `--served-model-name` names the `--model` of the same rank."""
    if not names:
        return [None] * count
    if count == 1:
        return [[name for group in names for name in group]]
    if len(names) != count:
        raise ModelFlagError(
            f"--served-model-name is given {_times(len(names))} for {count} --model flags; with "
            "several models give it once per --model, in the same order"
        )
    return list(names)


def _per_model(values: Sequence[T], count: int, flag: str) -> list[T | None]:
    """A flag given once applies to every model; given once per `--model`, pairs in order."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) != count:
        raise ModelFlagError(
            f"{flag} is given {_times(len(values))} for {count} --model flags; give it once "
            "(for every model) or once per --model, in the same order"
        )
    return list(values)


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
