"""The rerank API family."""
