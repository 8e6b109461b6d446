"""vLLM-style /tokenize and /detokenize for generation models."""
