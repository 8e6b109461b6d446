"""Remote models: served names whose requests an HTTP proxy relays to upstream
OpenAI-compatible servers (`RemoteModel` in `model.py`, the relay in `proxy.py`)."""
