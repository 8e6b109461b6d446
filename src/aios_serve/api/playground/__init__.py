"""The browser playground: chat, embeddings and rerank against this server's own API."""
