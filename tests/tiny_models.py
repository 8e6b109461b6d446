"""Tiny random models built from the bundled MiniLM tokenizer, for engine paths no package ships."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from aios_serve.models.bundled import resolve_bundled


def build_cross_encoder(folder: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A random BertForSequenceClassification saved with MiniLM's tokenizer."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_bundled("all-minilm-l6-v2")))
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
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
