"""One ConstraintVocab per loaded model, built on first use (it reads the whole vocabulary)."""

from __future__ import annotations

import threading
import weakref

from aios_serve.engine.generation.constraints.matcher import ConstraintVocab
from aios_serve.engine.generation.model import GenerationModel

_lock = threading.Lock()
_vocabs: weakref.WeakKeyDictionary[object, ConstraintVocab] = weakref.WeakKeyDictionary()


def constraint_vocab(model: GenerationModel) -> ConstraintVocab:
    """The model's vocabulary for grammar masks (blocking the first time: call off the loop)."""
    backend = model.backend
    with _lock:
        found = _vocabs.get(backend)
        if found is None:
            found = ConstraintVocab(
                backend.n_vocab,
                lambda t: backend.token_bytes(t, special=False),
                lambda t: backend.token_bytes(t, special=True),
                model.engine.eog_ids,
                lambda data: backend.tokenize(data.decode("utf-8", "replace"), False),
            )
            _vocabs[backend] = found
        return found
