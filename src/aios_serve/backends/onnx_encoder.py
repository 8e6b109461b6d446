"""Encoder forward passes on ONNX Runtime (fp32), from an exported or shipped model.onnx."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime

from aios_serve.backends.encoder_base import EncoderLoadError, HfEncoderBackend
from aios_serve.backends.onnx_export import cached_export

log = logging.getLogger("aios_serve.backends.onnx_encoder")


def session_options(threads: int | None) -> onnxruntime.SessionOptions:
    """Intra-op threads as configured, sequential execution, every graph optimization."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads sleep instead of spinning, like OMP_WAIT_POLICY=PASSIVE for torch:
    # several engines share a few cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxEncoderBackend(HfEncoderBackend):
    """Runs an HF encoder's ONNX graph on ONNX Runtime's CPU provider."""

    def __init__(
        self,
        folder: Path,
        cross_encoder: bool,
        max_model_len: int | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(folder, cross_encoder, max_model_len)
        input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if self.uses_token_types else [])
        self.onnx_path = cached_export(folder, cross_encoder, input_names)
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.onnx_path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise EncoderLoadError(f"{self.onnx_path}: ONNX Runtime cannot load it: {error}") from error
        self.input_names = [item.name for item in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise EncoderLoadError(f"{self.onnx_path} has inputs this server cannot feed: {sorted(unknown)}")
        self.output_name = self._pick_output()
        self.warm_up()

    def _pick_output(self) -> str:
        outputs = {item.name: item for item in self.session.get_outputs()}
        wanted = "logits" if self.cross_encoder else "last_hidden_state"
        if wanted in outputs:
            return wanted
        rank = 2 if self.cross_encoder else 3
        for name, item in outputs.items():
            if len(item.shape) == rank:
                return name
        raise EncoderLoadError(f"{self.onnx_path} has no {wanted} output (outputs: {sorted(outputs)})")

    def describe(self) -> str:
        return f"{super().describe()} on onnxruntime fp32 from {self.onnx_path}"

    def _run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        zeros = np.zeros_like(arrays["input_ids"])
        feed = {name: arrays.get(name, zeros) for name in self.input_names}
        output: np.ndarray = self.session.run([self.output_name], feed)[0]
        return output.astype(np.float32, copy=False)

    def _hidden_states(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(arrays)

    def _logits(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(arrays)[:, 0]
