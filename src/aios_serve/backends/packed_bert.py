"""Padding-free forward passes for BERT encoders.

A padded batch spends every linear layer on pad rows too. Here the batch's tokens are
concatenated into one [tokens, hidden] matrix, so embeddings, projections, feed-forward and
layer norms run on real tokens only, as one large matrix product per weight. Only attention
needs rows per sequence: sequences of similar length are gathered into small padded groups
with a key mask, and the results are scattered back. The weights are transformers' own
modules, called one by one; nothing is re-implemented but the order of the calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification, BertModel
from transformers.models.bert.modeling_bert import BertLayer, BertPooler

from aios_serve.backends.length_groups import plan_length_groups
from aios_serve.backends.protocols.encoder import EncodedInput

# Attention groups: padded tokens per group, and a group's fixed cost in tokens (SDPA calls are
# cheap next to a whole forward pass, so groups are smaller than the scheduler's micro-batches).
ATTENTION_GROUP_TOKENS = 4096
ATTENTION_CALL_OVERHEAD_TOKENS = 64
# Packed token counts are rounded up to one of BUCKETS_PER_OCTAVE sizes per power of two (at least
# SMALLEST_BUCKET), so activations and compiled kernels come in a few dozen shapes rather than one
# per batch (issue 27: glibc's heap and the kernel caches grew with every new shape). The padding
# costs at most 1/BUCKETS_PER_OCTAVE of a batch's tokens.
BUCKETS_PER_OCTAVE = 8
SMALLEST_BUCKET = 32


def bucketed_token_count(tokens: int) -> int:
    """The smallest bucket size that holds `tokens` packed tokens."""
    if tokens <= SMALLEST_BUCKET:
        return SMALLEST_BUCKET
    step = max(SMALLEST_BUCKET, (1 << (tokens - 1).bit_length()) // (2 * BUCKETS_PER_OCTAVE))
    return -(-tokens // step) * step


@dataclass(frozen=True)
class AttentionGroup:
    """Sequences attended together: where their rows sit in the packed matrix, padded."""

    rows: torch.Tensor  # [group, longest] packed row of each position (0 where padded)
    valid: torch.Tensor  # [group, longest] True on real tokens
    real_rows: torch.Tensor  # packed rows of the real tokens, in `rows[valid]` order
    key_mask: torch.Tensor  # [group, 1, 1, longest] for scaled_dot_product_attention


@dataclass(frozen=True)
class PackedBatch:
    """One batch as concatenated tokens with each sequence's start offset, then pad rows (token 0
    at position 0) up to the bucketed size; they belong to no sequence and no attention group."""

    input_ids: torch.Tensor  # [tokens]
    token_type_ids: torch.Tensor  # [tokens]
    position_ids: torch.Tensor  # [tokens], restarting at 0 for each sequence
    starts: np.ndarray  # [sequences + 1] offsets; sequence i is rows starts[i]:starts[i+1]
    groups: list[AttentionGroup]

    @property
    def real_tokens(self) -> int:
        """Rows before the padding."""
        return int(self.starts[-1])

    @classmethod
    def of(cls, batch: list[EncodedInput]) -> PackedBatch:
        lengths = [len(item) for item in batch]
        starts = np.zeros(len(batch) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        padding = np.zeros(bucketed_token_count(int(starts[-1])) - int(starts[-1]), dtype=np.int64)
        ids = np.concatenate([*(np.asarray(item.input_ids, dtype=np.int64) for item in batch), padding])
        types = np.concatenate(
            [
                *(
                    np.asarray(item.token_type_ids, dtype=np.int64)
                    if item.token_type_ids is not None
                    else np.zeros(len(item), dtype=np.int64)
                    for item in batch
                ),
                padding,
            ]
        )
        positions = np.concatenate([*(np.arange(length, dtype=np.int64) for length in lengths), padding])
        groups = [
            cls._group(group, lengths, starts)
            for group in plan_length_groups(lengths, ATTENTION_GROUP_TOKENS, ATTENTION_CALL_OVERHEAD_TOKENS)
        ]
        return cls(
            torch.from_numpy(ids), torch.from_numpy(types), torch.from_numpy(positions), starts, groups
        )

    @staticmethod
    def _group(members: list[int], lengths: list[int], starts: np.ndarray) -> AttentionGroup:
        longest = max(lengths[index] for index in members)
        rows = np.zeros((len(members), longest), dtype=np.int64)
        valid = np.zeros((len(members), longest), dtype=bool)
        for slot, index in enumerate(members):
            rows[slot, : lengths[index]] = np.arange(starts[index], starts[index + 1])
            valid[slot, : lengths[index]] = True
        rows_t, valid_t = torch.from_numpy(rows), torch.from_numpy(valid)
        return AttentionGroup(rows_t, valid_t, rows_t[valid_t], valid_t[:, None, None, :])


def packable(model: torch.nn.Module) -> bool:
    """True for the BERT encoders this module runs: BertModel, or a one-logit classifier on it."""
    if isinstance(model, BertForSequenceClassification):
        return model.bert.pooler is not None and packable(model.bert)
    if not isinstance(model, BertModel):
        return False
    config = model.config
    return not config.is_decoder and not getattr(config, "add_cross_attention", False)


class PackedBert:
    """Runs a BertModel (or its sequence classifier) on packed batches."""

    def __init__(self, model: BertModel | BertForSequenceClassification) -> None:
        if not packable(model):
            raise ValueError(f"{type(model).__name__} cannot run packed")
        self.classifier = model if isinstance(model, BertForSequenceClassification) else None
        self.bert: BertModel = model.bert if isinstance(model, BertForSequenceClassification) else model
        self.heads = int(self.bert.config.num_attention_heads)
        self.layers = cast("list[BertLayer]", list(self.bert.encoder.layer))
        self.pooler: BertPooler | None = self.bert.pooler
        self.fused_projections = [self._fuse_projections(layer) for layer in self.layers]

    @staticmethod
    def _fuse_projections(layer: BertLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """Query, key and value weights stacked into one [3 * hidden, hidden] matrix, so each layer
        runs one matrix product; the three modules then hold views of it, so memory is not doubled."""
        linears = (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value)
        weight = torch.cat([linear.weight.detach() for linear in linears])
        bias = torch.cat([linear.bias.detach() for linear in linears])
        size = linears[0].weight.shape[0]
        for index, linear in enumerate(linears):
            rows = slice(index * size, (index + 1) * size)
            linear.weight = torch.nn.Parameter(weight[rows], requires_grad=False)
            linear.bias = torch.nn.Parameter(bias[rows], requires_grad=False)
        return weight, bias

    def _embed(self, packed: PackedBatch) -> torch.Tensor:
        embeddings = self.bert.embeddings
        hidden = embeddings.word_embeddings(packed.input_ids)
        hidden = hidden + embeddings.token_type_embeddings(packed.token_type_ids)
        hidden = hidden + embeddings.position_embeddings(packed.position_ids)
        return embeddings.LayerNorm(hidden)

    def _attend(self, projections: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
        """Self-attention per length group over packed [tokens, 3 * hidden] query-key-value rows."""
        context = projections.new_empty(projections.shape[0], projections.shape[1] // 3)
        context[packed.real_tokens :] = 0  # pad rows attend to nothing
        for group in packed.groups:
            count, longest = group.rows.shape
            gathered = projections[group.rows].view(count, longest, 3, self.heads, -1)
            query, key, value = gathered.permute(2, 0, 3, 1, 4).unbind(0)
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=group.key_mask)
            attended = attended.transpose(1, 2).reshape(count, longest, -1)
            context.index_copy_(0, group.real_rows, attended[group.valid])
        return context

    @torch.inference_mode()
    def hidden_states(self, packed: PackedBatch) -> torch.Tensor:
        """Last hidden states [tokens, hidden] in the model's precision, pad rows included."""
        hidden = self._embed(packed)
        for layer, (weight, bias) in zip(self.layers, self.fused_projections, strict=True):
            context = self._attend(F.linear(hidden, weight, bias), packed)
            attention_out = layer.attention.output
            hidden = attention_out.LayerNorm(attention_out.dense(context) + hidden)
            intermediate = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(hidden))
            hidden = layer.output.LayerNorm(layer.output.dense(intermediate) + hidden)
        return hidden

    @torch.inference_mode()
    def first_logits(self, packed: PackedBatch) -> torch.Tensor:
        """The classifier's first logit for each sequence [sequences]."""
        if self.classifier is None or self.pooler is None:
            raise ValueError("this model has no classification head")
        first_tokens = self.hidden_states(packed)[torch.from_numpy(packed.starts[:-1])]
        pooled = self.pooler(first_tokens[:, None, :])  # the pooler reads position 0
        return self.classifier.classifier(pooled)[:, 0]
