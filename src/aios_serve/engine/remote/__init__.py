"""Remote models: served names forwarded to upstream OpenAI-compatible servers."""
