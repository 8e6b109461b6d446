"""The embeddings API family."""
