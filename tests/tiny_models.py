"""Tiny random models built from the bundled MiniLM tokenizer, for engine paths no package ships."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaModel,
)

from aios_serve.models.bundled import resolve_bundled


def minilm_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(resolve_bundled("all-minilm-l6-v2")))


def save_model_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """An HF folder (weights, config, tokenizer) as a user's local model would be."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_cross_encoder(folder: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A random BertForSequenceClassification saved with MiniLM's tokenizer."""
    torch.manual_seed(seed)
    tokenizer = minilm_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # spread the logits so that rankings are not near-ties
        model.classifier.weight.normal_(0.0, 4.0)
    return save_model_folder(model, tokenizer, folder)


def build_roberta_encoder(folder: Path, seed: int = 0) -> Path:
    """A random RobertaModel (an architecture that is not BERT) saved with MiniLM's tokenizer;
    it reads at most 64 tokens (RoBERTa positions start after the padding index)."""
    torch.manual_seed(seed)
    tokenizer = minilm_tokenizer()
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        type_vocab_size=2,
        pad_token_id=0,
    )
    return save_model_folder(RobertaModel(config).eval(), tokenizer, folder)
