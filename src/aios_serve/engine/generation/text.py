"""Incremental detokenization with stop strings and a streaming holdback."""

from __future__ import annotations

import codecs


class OutputText:
    """A choice's text as tokens arrive: complete UTF-8 only, stop strings cut out, and the
    tail that could still begin a stop string held back from streaming."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._holdback = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self._emitted = 0
        self.matched_stop: str | None = None

    def append(self, piece: bytes) -> str | None:
        """Add a token's bytes; returns the stop string if the text now contains one."""
        if self.matched_stop is not None:
            return self.matched_stop
        added = self._decoder.decode(piece)
        if not added:
            return None
        search_from = max(0, len(self.text) - self._holdback)
        self.text += added
        if self._stops:
            best: tuple[int, str] | None = None
            for stop in self._stops:
                at = self.text.find(stop, search_from)
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, stop)
            if best is not None:
                self.text = self.text[: best[0]]
                self.matched_stop = best[1]
        return self.matched_stop

    def finish(self) -> None:
        """Flush an incomplete UTF-8 tail (as replacement characters) at the end."""
        if self.matched_stop is None:
            self.text += self._decoder.decode(b"", final=True)

    def take_delta(self, final: bool) -> str:
        """The text not streamed yet, less the held-back tail unless `final`."""
        end = len(self.text) if final or self.matched_stop is not None else len(self.text) - self._holdback
        if end <= self._emitted:
            return ""
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta
