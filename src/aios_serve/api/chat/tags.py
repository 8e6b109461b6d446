"""Tags (`<think>`, `<tool_call>`) in streamed text: a tag may arrive split across deltas, so the
end of the text that could still become one is held back until the next delta settles it."""

from __future__ import annotations


def tag_prefix_len(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that could begin `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def split_before_partial_tag(text: str, tag: str) -> tuple[str, str]:
    """(the text that can go out now, the suffix held back because it could begin `tag`)."""
    cut = len(text) - tag_prefix_len(text, tag)
    return text[:cut], text[cut:]
