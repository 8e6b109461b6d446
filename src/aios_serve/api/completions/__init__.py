"""The Completions API (POST /v1/completions)."""
