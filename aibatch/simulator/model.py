"""The simulator's stand-in for Claude: a token counter and deterministic, plausible answers.

A summary request gets an extractive summary of the ticket (its most representative
sentences); a classification request gets one label from the label set the request itself
carries (a tool's enum, or options listed in the prompt), chosen by keyword evidence.
The same request always gets the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

_TICKET_TAG = re.compile(r"<ticket>(.*?)</ticket>", re.DOTALL)
_DATA_TAG = re.compile(r"<data>(.*?)</data>", re.DOTALL)
_LISTED_OPTIONS = re.compile(r"one of[:\s]+([^\n]+)", re.IGNORECASE)
_INJECTION = re.compile(
    r"(?:respond|reply|answer|output|say|classify (?:this|it) as|label (?:this|it) as)"
    r"\s+(?:with\s+|only\s+)?[\"']?([A-Za-z][A-Za-z _-]{1,40}?)[\"']?(?:[.!\n]|$)",
    re.IGNORECASE,
)

# Words that count as evidence for the labels support teams use most. Labels outside this
# table are matched by their own words.
_LABEL_EVIDENCE: dict[str, tuple[str, ...]] = {
    "billing": (
        "invoice",
        "charge",
        "charged",
        "refund",
        "payment",
        "pay",
        "price",
        "pricing",
        "subscription",
        "card",
        "billing",
        "bill",
        "billed",
        "receipt",
        "plan",
        "vat",
    ),
    "technical": (
        "error",
        "crash",
        "crashes",
        "bug",
        "login",
        "fail",
        "fails",
        "failed",
        "broken",
        "timeout",
        "slow",
        "sync",
        "api",
        "install",
        "update",
        "password",
        "loading",
        "500",
    ),
    "feature request": (
        "feature",
        "add",
        "wish",
        "suggest",
        "suggestion",
        "would",
        "could",
        "support",
        "option",
        "ability",
        "integration",
        "request",
        "roadmap",
        "dark",
    ),
    "account": ("account", "email", "username", "profile", "delete", "gdpr", "access"),
    "shipping": ("shipping", "delivery", "package", "tracking", "courier", "arrived"),
}
# Words that mark the sentences worth keeping in a summary.
_SIGNAL_WORDS = frozenset(
    {w for words in _LABEL_EVIDENCE.values() for w in words}
    | set(
        (
            "cannot can't unable not error issue problem please need want help fix refund "
            "charged wrong missing stuck urgent blocked since again still every"
        ).split()
    )
)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "this",
        "that",
        "i",
        "my",
        "me",
        "we",
        "our",
        "you",
        "your",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "its",
        "as",
        "by",
        "from",
        "not",
        "no",
        "so",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "can",
        "will",
        "would",
        "just",
        "please",
        "hi",
        "hello",
        "thanks",
        "thank",
    ]
)


def count_text_tokens(text: str, factor: float = 1.0) -> int:
    """A cheap, stable stand-in for a BPE tokenizer: about one token per 4 characters,
    times the model's tokenizer factor (1.3 for the tokenizer of Opus 4.7 and later),
    rounded up."""
    tokens = (len(text) + 3) // 4
    return tokens if factor == 1.0 else scale_tokens(tokens, factor)


def scale_tokens(tokens: int, factor: float) -> int:
    """Tokens on the old tokenizer → tokens on a model's tokenizer, rounded up."""
    if factor == 1.0:
        return tokens
    return -(-tokens * round(factor * 100) // 100)


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, dict):
        kind = block.get("type")
        if kind == "text":
            return str(block.get("text", ""))
        if kind == "tool_use":
            return str(block.get("input", ""))
        if kind == "tool_result":
            content = block.get("content", "")
            return content if isinstance(content, str) else " ".join(map(_block_text, content))
    return ""


def content_blocks(content: Any) -> list[Any]:
    """A message's or system prompt's content as a list of blocks."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return content
    return []


class PromptBlock(NamedTuple):
    """One cacheable unit of a prompt, in the API's prefix order: tools, system, messages."""

    tokens: int
    cache_breakpoint: bool
    key: str


def prompt_blocks(body: dict[str, Any], factor: float = 1.0) -> list[PromptBlock]:
    """Split a request into its blocks so that token counts and cache prefixes can be found;
    `factor` is the model's tokenizer factor (each block's count is scaled, rounded up)."""
    blocks: list[PromptBlock] = []
    for tool in body.get("tools") or []:
        text = orjson.dumps(tool).decode()
        tokens = scale_tokens((len(text) + 3) // 4 + 8, factor)
        blocks.append(PromptBlock(tokens, "cache_control" in tool, text))
    for block in content_blocks(body.get("system")):
        text = _block_text(block)
        marked = isinstance(block, dict) and "cache_control" in block
        blocks.append(PromptBlock(scale_tokens((len(text) + 3) // 4, factor), marked, text))
    for message in body.get("messages") or []:
        for block in content_blocks(message.get("content")):
            text = _block_text(block)
            marked = isinstance(block, dict) and "cache_control" in block
            tokens = scale_tokens((len(text) + 3) // 4 + 4, factor)
            blocks.append(PromptBlock(tokens, marked, text))
    return blocks


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return " ".join(_block_text(b) for b in content_blocks(message.get("content")))
    return ""


def system_text(body: dict[str, Any]) -> str:
    return " ".join(_block_text(b) for b in content_blocks(body.get("system")))


def ticket_text(body: dict[str, Any]) -> str:
    """The text being worked on: the values framed in <data> tags (joined), else inside
    <ticket> tags, else all of the last user message."""
    text = last_user_text(body)
    framed = [value.strip() for value in _DATA_TAG.findall(text) if value.strip()]
    if framed:
        return "\n".join(framed)
    tagged = _TICKET_TAG.search(text)
    return tagged.group(1).strip() if tagged else text.strip()


def find_label_tool(body: dict[str, Any]) -> tuple[str, str, list[str]] | None:
    """The first tool whose input schema has a string enum: (tool name, property, labels)."""
    for tool in body.get("tools") or []:
        schema = tool.get("input_schema") or {}
        for prop, spec in (schema.get("properties") or {}).items():
            if isinstance(spec, dict) and isinstance(spec.get("enum"), list) and spec["enum"]:
                return str(tool.get("name")), str(prop), [str(v) for v in spec["enum"]]
    return None


def listed_options(text: str) -> list[str]:
    """Options listed in the prompt as `one of: a, b, c` (or `a | b | c`)."""
    match = _LISTED_OPTIONS.search(text)
    if not match:
        return []
    raw = re.split(r"\s*[,|;/]\s*|\s+or\s+", match.group(1).strip().rstrip("."))
    return [o.strip(" \"'`[]") for o in raw if o.strip(" \"'`[]")]


# str.translate + split instead of a regex: five times faster here, and the simulator's
# CPU per request is budgeted (see benchmarks/simulator_cpu.py).
_PUNCTUATION_TO_SPACE = str.maketrans({c: " " for c in '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'})


def _words(text: str) -> list[str]:
    return text.lower().translate(_PUNCTUATION_TO_SPACE).split()


def _sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    marked = flat.replace(". ", ".\0").replace("! ", "!\0").replace("? ", "?\0")
    return [s for s in marked.split("\0") if s]


_LABEL_LINE = re.compile(r"^- ([^:\n]+): (.+)$", re.MULTILINE)


def label_definitions(system: str) -> dict[str, str]:
    """Definitions a prompt gives its labels, as `- label: definition` lines."""
    return {label.strip(): meaning for label, meaning in _LABEL_LINE.findall(system)}


@lru_cache(maxsize=64)
def _evidence_index(
    labels: tuple[str, ...], definitions: tuple[tuple[str, str], ...] = ()
) -> dict[str, tuple[int, ...]]:
    """Word → positions of the labels it is evidence for, built once per label set: the
    table's words for labels support teams use, else the label's own words and those of
    its definition in the prompt."""
    meaning = dict(definitions)
    index: dict[str, list[int]] = {}
    for position, label in enumerate(labels):
        evidence = _LABEL_EVIDENCE.get(label.lower()) or tuple(
            w for w in _words(label + " " + meaning.get(label, "")) if w not in _STOPWORDS
        )
        for word in evidence:
            index.setdefault(word, []).append(position)
    return {word: tuple(positions) for word, positions in index.items()}


def choose_label(
    ticket: str,
    labels: Sequence[str],
    obey_injection: bool = False,
    definitions: dict[str, str] | None = None,
) -> str:
    """The label with the most keyword evidence in the ticket; ties keep the listed order."""
    if obey_injection:
        injected = _INJECTION.search(ticket)
        if injected:
            return injected.group(1).strip()
    labels = tuple(labels)
    known = tuple(sorted((definitions or {}).items()))
    index = _evidence_index(labels, tuple(item for item in known if item[0] in labels))
    scores = [0] * len(labels)
    for word in _words(ticket):
        for position in index.get(word, ()):
            scores[position] += 1
    best = max(scores)
    if best:
        return labels[scores.index(best)]
    for fallback in ("other", "others", "general", "unknown"):
        for label in labels:
            if label.lower() == fallback:
                return label
    return labels[-1]


def summarize(ticket: str, max_sentences: int = 2) -> str:
    """An extractive summary: the sentences that carry the most of what a ticket is about
    (problems, requests, money), kept in their original order."""
    sentences = _sentences(ticket)
    if len(sentences) <= max_sentences:
        return " ".join(sentences)
    signal = _SIGNAL_WORDS
    scores = [len(signal.intersection(_words(sentence))) for sentence in sentences]
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    return " ".join(sentences[i] for i in sorted(ranked[:max_sentences]))


def truncate_to_tokens(text: str, max_tokens: int, factor: float = 1.0) -> tuple[str, bool]:
    """The text cut to what `max_tokens` holds on a tokenizer of this factor."""
    if count_text_tokens(text, factor) <= max_tokens:
        return text, False
    limit = max(0, int(max_tokens / factor) * 4)
    while limit and count_text_tokens(text[:limit], factor) > max_tokens:
        limit -= 1
    return text[:limit], True
