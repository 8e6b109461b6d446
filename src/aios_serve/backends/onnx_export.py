"""Export an HF encoder folder to ONNX once, check it against torch, and cache it by content.

The export uses torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`, via
`torch.export`). The legacy TorchScript exporter is wrong for transformers 5 encoders: their
attention-mask builder indexes the 2D padding mask with broadcast index tensors
(`padding_mask[batch_idx, kv_idx]`) and branches on shapes in Python, and the traced graph keeps
the example's batch and sequence sizes, so any other shape (or padding pattern) gets wrong hidden
states.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import transformers
from transformers import AutoModel, AutoModelForSequenceClassification, PreTrainedModel

from aios_serve.backends.encoder_base import EncoderLoadError
from aios_serve.models.bundled import cache_dir

log = logging.getLogger("aios_serve.backends.onnx_export")
for _chatty in ("onnx_ir", "onnxscript"):  # an INFO line per folded constant or merged initializer
    logging.getLogger(_chatty).setLevel(logging.WARNING)

EXPORT_FORMAT = "aios-onnx-1"  # bump when the exported graph's inputs or outputs change
OPSET = 18
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")  # weights, their index, config.json
# Exported outputs agree with torch to ~1e-5 on MiniLM; a wrong export is off by 0.1 or more.
CHECK_ATOL = 1e-3


def shipped_onnx(folder: Path) -> Path | None:
    """A model.onnx the folder already holds (as Optimum and sentence-transformers save it)."""
    for candidate in (folder / "model.onnx", folder / "onnx" / "model.onnx"):
        if candidate.is_file():
            return candidate
    return None


def export_key(folder: Path, cross_encoder: bool, input_names: list[str]) -> str:
    """A hash of the folder's weights and config files and of everything the export depends on."""
    digest = hashlib.sha256()
    head = [EXPORT_FORMAT, torch.__version__, transformers.__version__, str(cross_encoder), *input_names]
    digest.update("\n".join(head).encode())
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for path in files:
        if "tokenizer" in path.name:
            continue
        digest.update(f"\n{path.name}\n".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:32]


class _Forward(torch.nn.Module):
    """The model with positional inputs and one plain tensor out."""

    def __init__(self, model: PreTrainedModel, cross_encoder: bool) -> None:
        super().__init__()
        self.model = model
        self.cross_encoder = cross_encoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return output.logits if self.cross_encoder else output.last_hidden_state


def _example_inputs(input_names: list[str], vocab_size: int) -> list[np.ndarray]:
    """A padded batch of mixed lengths: 3 rows, 24 positions, the shortest 5 tokens long."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000 if vocab_size > 2000 else 1, vocab_size, size=(3, 24), dtype=np.int64)
    mask = np.ones((3, 24), dtype=np.int64)
    mask[1, 5:] = 0
    mask[2, 17:] = 0
    types = np.zeros((3, 24), dtype=np.int64)
    types[:, 12:] = 1
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return [arrays[name] for name in input_names]


def _check_against_torch(path: Path, forward: _Forward, input_names: list[str], vocab_size: int) -> None:
    """Run the export and torch on a batch of another shape; refuse an export that disagrees."""
    arrays = _example_inputs(input_names, vocab_size)
    arrays = [array[:, :19] for array in arrays]  # a shape the exporter never saw
    with torch.inference_mode():
        expected = forward(*(torch.from_numpy(a) for a in arrays)).float().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(input_names, arrays, strict=True)))[0]
    if not forward.cross_encoder:  # padded positions may differ; pooling ignores them
        real = arrays[1].astype(bool)
        expected, got = expected[real], got[real]
    worst = float(np.abs(expected - got).max())
    if not np.isfinite(worst) or worst > CHECK_ATOL:
        raise EncoderLoadError(f"the ONNX export disagrees with torch (max abs diff {worst:.3g})")
    log.info("ONNX export matches torch (max abs diff %.2g)", worst)


def _export(folder: Path, cross_encoder: bool, input_names: list[str], target: Path) -> None:
    loader = AutoModelForSequenceClassification if cross_encoder else AutoModel
    model = loader.from_pretrained(str(folder)).float().eval()
    forward = _Forward(model, cross_encoder).eval()
    vocab_size = int(getattr(model.config, "vocab_size", 30000))
    batch, sequence = torch.export.Dim.DYNAMIC, torch.export.Dim.DYNAMIC
    example = tuple(torch.from_numpy(a) for a in _example_inputs(input_names, vocab_size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            forward,
            example,
            input_names=input_names,
            output_names=["logits" if cross_encoder else "last_hidden_state"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise EncoderLoadError("torch.onnx.export returned no program")
    program.save(str(target))
    _check_against_torch(target, forward, input_names, vocab_size)


def cached_export(folder: Path, cross_encoder: bool, input_names: list[str]) -> Path:
    """The folder's ONNX graph: shipped, or exported once under the cache dir and reused."""
    shipped = shipped_onnx(folder)
    if shipped is not None:
        return shipped
    key = export_key(folder, cross_encoder, input_names)
    final = cache_dir() / "onnx" / key
    if (final / "model.onnx").is_file():
        log.info("using the cached ONNX export %s", final)
        return final / "model.onnx"
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    log.info("exporting %s to ONNX (once; cached in %s)", folder, final)
    try:
        _export(folder, cross_encoder, input_names, staging / "model.onnx")
        (staging / "source.txt").write_text(f"{folder}\n")
        try:
            os.rename(staging, final)
        except OSError:  # another process finished the same export first
            if not (final / "model.onnx").is_file():
                raise
    except EncoderLoadError:
        raise
    except Exception as error:
        raise EncoderLoadError(f"{folder}: cannot export to ONNX: {type(error).__name__}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "model.onnx"
