"""Serving local models by path without a config file, in process: the kind read from a model's
files, `--model` flags paired with the other flags in order, and the bundled defaults when no
model is given (served by a real process: tests/e2e/test_serve_model_flag.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aios_serve import cli
from aios_serve.models.detect import ModelLayoutError, detect_kind
from aios_serve.models.from_flags import ModelFlagError, ModelFlags, specs_from_flags
from tests.tiny_models import build_cross_encoder

MINILM = "all-minilm-l6-v2"


def test_no_model_flags_serve_the_bundled_defaults() -> None:
    config = cli.serve_config(cli.build_parser().parse_args(["serve"]))
    assert [spec.name for spec in config.models][:2] == [MINILM, "smollm2-135m-instruct"]
    with pytest.raises(SystemExit, match="--served-model-name needs --model"):
        cli.serve_config(cli.build_parser().parse_args(["serve", "--served-model-name", "x"]))


def _folder_with_config(root: Path, config: dict[str, object], *extra_files: str) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    for name in extra_files:
        (root / name).write_text("{}")
    return root


def test_detection_reads_the_architectures(tmp_path: Path) -> None:
    bert = _folder_with_config(tmp_path / "bert", {"architectures": ["BertModel"]})
    assert detect_kind(bert) == "embedding"
    sentence_transformers = _folder_with_config(
        tmp_path / "st", {"architectures": ["Qwen2ForCausalLM"]}, "modules.json"
    )
    assert detect_kind(sentence_transformers) == "embedding"
    causal = _folder_with_config(tmp_path / "llama", {"architectures": ["LlamaForCausalLM"]})
    assert detect_kind(causal) == "generate"
    (tmp_path / "model.GGUF").write_bytes(b"GGUF")
    assert detect_kind(tmp_path / "model.GGUF") == "generate"


def test_a_one_label_classifier_is_a_cross_encoder(tmp_path: Path) -> None:
    assert detect_kind(build_cross_encoder(tmp_path / "one-label")) == "cross-encoder"
    three_labels = _folder_with_config(
        tmp_path / "three",
        {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b", "2": "c"}},
    )
    with pytest.raises(ModelLayoutError, match="has 3 labels"):
        detect_kind(three_labels)


def test_folders_nothing_matches_name_what_was_found(tmp_path: Path) -> None:
    empty = tmp_path / "weights-only"
    empty.mkdir()
    (empty / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLayoutError, match=r"no config\.json .*found: model\.safetensors"):
        detect_kind(empty)
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ModelLayoutError, match=r"not a \.gguf file"):
        detect_kind(tmp_path / "model.bin")


def test_flags_pair_with_models_in_order(tmp_path: Path) -> None:
    bert = _folder_with_config(tmp_path / "bert", {"architectures": ["BertModel"]})
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    specs = specs_from_flags(
        ModelFlags(
            paths=[str(gguf), str(bert)],
            names=[["chat", "chat-alias"], ["embed"]],
            engines=["llama.cpp", "onnx"],
        )
    )
    assert [(s.name, s.aliases, s.kind, s.options) for s in specs] == [
        ("chat", ["chat-alias"], "generate", {"engine": "llama.cpp"}),
        ("embed", [], "embedding", {"backend": "onnx"}),
    ]
    with pytest.raises(ModelFlagError, match="once per --model"):
        specs_from_flags(ModelFlags(paths=[str(gguf), str(bert)], names=[["only-one"]]))


def test_engines_that_cannot_serve_the_model_are_refused(tmp_path: Path) -> None:
    causal = _folder_with_config(tmp_path / "llama", {"architectures": ["LlamaForCausalLM"]})
    with pytest.raises(ModelFlagError, match=r"llama\.cpp reads a \.gguf file"):
        specs_from_flags(ModelFlags(paths=[str(causal)], engines=["llama.cpp"]))
    with pytest.raises(ModelFlagError, match="not generate"):
        specs_from_flags(ModelFlags(paths=[str(causal)], engines=["onnx"]))
    assert specs_from_flags(ModelFlags(paths=[str(causal)]))[0].options == {}
