"""OpenVINO's paged-attention model as a GenerationBackend: GenAI builds the IR from a GGUF
file, our block pool owns the KV cache, our engine loop drives it."""

from aios_serve.backends.openvino_paged import precision
from aios_serve.backends.openvino_paged.blocks import BlockPool, Write
from aios_serve.backends.openvino_paged.model import OpenVinoPagedModel
from aios_serve.backends.openvino_paged.weights import paged_ir

__all__ = ["BlockPool", "OpenVinoPagedModel", "Write", "paged_ir", "precision"]
