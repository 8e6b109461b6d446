"""llama.cpp backend for GGUF generation models (low-level llama-cpp-python bindings)."""

from aios_serve.backends.llama_cpp.model import LlamaCppModel
from aios_serve.backends.llama_cpp.vocab import LlamaCppError, LlamaCppVocab, init_backend

__all__ = ["LlamaCppError", "LlamaCppModel", "LlamaCppVocab", "init_backend"]
