"""The one sentence every backend says when the documents do not hold the answer."""

from __future__ import annotations

REFUSAL = "I could not find this in the documents."


def is_refusal(text: str) -> bool:
    """Whether an answer is (essentially) the refusal sentence."""
    norm = " ".join(text.lower().split())
    return "could not find this in the documents" in norm or norm.startswith(
        ("i could not find", "i couldn't find", "i cannot find", "the passages do not")
    )
