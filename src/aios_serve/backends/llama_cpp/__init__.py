"""llama.cpp backend for GGUF generation models (low-level llama-cpp-python bindings)."""

from aios_serve.backends.llama_cpp.model import LlamaCppError, LlamaCppModel

__all__ = ["LlamaCppError", "LlamaCppModel"]
