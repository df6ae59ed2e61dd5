"""The reading half of the answerability decision: the answering model asked, in one short pass,
whether the passages it was given state the answer.

The yes/no request is the answer request with its last line (the answer instruction) swapped for
a yes/no question, so a model that keeps its key/value state (the local model) reads only that
line before it says "yes" or "no", and then only the answer line again before it answers. The
reading is the share of "yes" in the first token's probabilities: from the logits for the local
model; from `logprobs` (max_tokens=1) for an OpenAI-compatible endpoint, else from a one-word JSON
verdict when the endpoint gives no log probabilities.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping

from rag.prompting import ANSWER_INSTRUCTION
from rag.types import GenerationRequest, Message

JUDGE_INSTRUCTION = "Do the passages above state the answer to this question? Reply with one word, yes or no:"
VERDICT_INSTRUCTION = ('Do the passages above state the answer to this question? Reply only with JSON: '
                       '{"answered": true} or {"answered": false}')
YES_WORDS = ("yes", "Yes", "YES")
NO_WORDS = ("no", "No", "NO")
_VERDICT = re.compile(r'"answered"\s*:\s*(true|false)', re.IGNORECASE)


def _swap_instruction(request: GenerationRequest, instruction: str, max_tokens: int) -> GenerationRequest:
    last = request.messages[-1]
    if last.content.endswith(f"\n{ANSWER_INSTRUCTION}"):
        head = last.content[: -len(ANSWER_INSTRUCTION) - 1]  # everything before it, byte for byte
    else:  # a request written elsewhere: its last line is taken for the instruction
        head = last.content.rsplit("\n", 1)[0]
    messages = [*request.messages[:-1], Message(role=last.role, content=f"{head}\n{instruction}")]
    return request.model_copy(update={"messages": messages, "max_tokens": max_tokens, "temperature": 0.0})


def judge_request(request: GenerationRequest) -> GenerationRequest:
    """The yes/no request: the answer request up to the question, then the yes/no line."""
    return _swap_instruction(request, JUDGE_INSTRUCTION, 1)


def verdict_request(request: GenerationRequest) -> GenerationRequest:
    """The same question for an endpoint without log probabilities: a one-word JSON verdict."""
    return _swap_instruction(request, VERDICT_INSTRUCTION, 12)


def yes_share(probabilities: Mapping[str, float] | Iterable[tuple[str, float]]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the first token's candidates (surrounding spaces ignored);
    None when neither word is among them."""
    items = probabilities.items() if isinstance(probabilities, Mapping) else probabilities
    yes = no = 0.0
    for token, p in items:
        word = token.strip()
        if word in YES_WORDS:
            yes += p
        elif word in NO_WORDS:
            no += p
    return yes / (yes + no) if yes + no > 0 else None


def parse_verdict(text: str) -> float | None:
    """1.0 for {"answered": true}, 0.0 for false, None when the reply says neither."""
    match = _VERDICT.search(text)
    if match:
        return 1.0 if match.group(1).lower() == "true" else 0.0
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return float(value) if isinstance(value, bool) else None


def logit(p: float, eps: float = 1e-4) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))
