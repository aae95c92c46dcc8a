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
    one_hour: bool = False  # a `"ttl": "1h"` breakpoint


def cache_controls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `cache_control` objects in prefix order: tools, system, messages."""
    found: list[dict[str, Any]] = []
    blocks = [*(body.get("tools") or []), *content_blocks(body.get("system"))]
    for message in body.get("messages") or []:
        blocks.extend(content_blocks(message.get("content")))
    for block in blocks:
        if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
            found.append(block["cache_control"])
    return found


def _one_hour(block: Any) -> bool:
    control = block.get("cache_control") if isinstance(block, dict) else None
    return isinstance(control, dict) and control.get("ttl") == "1h"


def prompt_blocks(body: dict[str, Any], factor: float = 1.0) -> list[PromptBlock]:
    """Split a request into its blocks so that token counts and cache prefixes can be found;
    `factor` is the model's tokenizer factor (each block's count is scaled, rounded up)."""
    blocks: list[PromptBlock] = []
    for tool in body.get("tools") or []:
        text = orjson.dumps(tool).decode()
        tokens = scale_tokens((len(text) + 3) // 4 + 8, factor)
        blocks.append(PromptBlock(tokens, "cache_control" in tool, text, _one_hour(tool)))
    for block in content_blocks(body.get("system")):
        text = _block_text(block)
        marked = isinstance(block, dict) and "cache_control" in block
        tokens = scale_tokens((len(text) + 3) // 4, factor)
        blocks.append(PromptBlock(tokens, marked, text, _one_hour(block)))
    for message in body.get("messages") or []:
        for block in content_blocks(message.get("content")):
            text = _block_text(block)
            marked = isinstance(block, dict) and "cache_control" in block
            tokens = scale_tokens((len(text) + 3) // 4 + 4, factor)
            blocks.append(PromptBlock(tokens, marked, text, _one_hour(block)))
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


# The fake model's world knowledge: things people buy, by the kind of goods a label or its
# definition may name. A label whose definition says "kitchen" gains the words for kitchen
# things, so "Cast Iron Casserole" is a home product without the word "home" in it.
_KNOWLEDGE: dict[str, tuple[str, ...]] = {
    "audio": ("earbud", "headphone", "speaker", "headset", "microphone", "bluetooth"),
    "charger": ("charger", "charging", "power", "bank", "mah", "usb", "socket"),
    "cable": ("cable", "hdmi", "usb", "ethernet"),
    "computer": ("keyboard", "mouse", "webcam", "ssd", "laptop", "monitor", "docking", "pc"),
    "smart": ("smart", "wi", "fi", "app", "firmware", "bluetooth"),
    "gadget": ("camera", "reader", "watch", "battery", "rechargeable", "4k", "wireless"),
    "garment": (
        "shirt",
        "t",
        "chino",
        "trouser",
        "jean",
        "sweatshirt",
        "hoodie",
        "hooded",
        "pyjama",
        "dress",
        "sweater",
        "jacket",
        "vest",
        "coat",
        "beanie",
        "belt",
        "sock",
        "scarf",
        "hat",
        "knit",
        "merino",
        "denim",
        "fleece",
        "wear",
        "fit",
        "size",
        "wash",
        "machine",
    ),
    "kitchen": (
        "pan",
        "frying",
        "nonstick",
        "casserole",
        "knife",
        "chef",
        "cutting",
        "board",
        "plate",
        "coffee",
        "kettle",
        "mug",
        "cookware",
        "stew",
        "hob",
        "oven",
        "dinner",
        "cook",
    ),
    "bedding": ("bed", "sheet", "duvet", "pillow", "blanket", "throw", "thread"),
    "bath": ("towel", "bath"),
    "decor": ("cushion", "candle", "scented", "clock", "vase", "basket", "storage", "wall"),
    "lighting": ("lamp", "bulb", "light", "shade"),
    "cleaning": ("cloth", "microfiber", "cleaning", "dust"),
    "toy": (
        "toy",
        "puzzle",
        "jigsaw",
        "game",
        "block",
        "brick",
        "building",
        "tile",
        "magnetic",
        "train",
        "stacking",
        "ring",
        "dollhouse",
        "doll",
        "plush",
        "teddy",
        "dinosaur",
        "remote",
        "control",
        "kid",
        "child",
        "children",
        "play",
        "pretend",
        "age",
        "family",
    ),
    "sport": ("yoga", "mat", "dumbbell", "weight", "fitness", "helmet", "bike", "cycling", "gym"),
    "outdoor": ("camping", "tent", "backpack", "hiking", "fishing", "rod", "trail", "travel"),
    "pet": ("dog", "cat", "leash", "scratching", "grooming", "pet", "puppy", "fur"),
    "stationery": ("notebook", "pen", "fountain", "planner", "desk", "paper", "ink", "journal"),
    "garden": ("hose", "plant", "pot", "garden", "watering", "seed"),
    "beauty": ("shampoo", "soap", "skincare", "hair", "scalp", "conditioner"),
    "car": ("car", "dashboard", "vent", "mount", "vehicle", "windscreen"),
}


def _stem(word: str) -> str:
    """A word's singular, roughly: enough for jackets/jacket and puzzles/puzzle to meet."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@lru_cache(maxsize=64)
def _evidence_index(
    labels: tuple[str, ...], definitions: tuple[tuple[str, str], ...] = ()
) -> dict[str, tuple[tuple[int, float], ...]]:
    """Word stem → (position, weight) of the labels it is evidence for, built once per label
    set: the table's words for labels support teams use, else the label's own words, those
    of its definition in the prompt, and what the fake model knows of the kinds of goods
    they name. A word that is evidence for k labels weighs 1/k: "cotton" says less than
    "jacket"."""
    meaning = dict(definitions)
    evidence_of: list[set[str]] = []
    for label in labels:
        table = _LABEL_EVIDENCE.get(label.lower())
        if table:
            evidence_of.append({_stem(w) for w in table})
            continue
        own = {_stem(w) for w in _words(label + " " + meaning.get(label, ""))} - _STOPWORDS
        known = {_stem(w) for concept in own for w in _KNOWLEDGE.get(concept, ())}
        evidence_of.append(own | known)
    labels_of: dict[str, list[int]] = {}
    for position, words in enumerate(evidence_of):
        for word in words:
            labels_of.setdefault(word, []).append(position)
    return {
        word: tuple((p, 1.0 / len(positions)) for p in positions)
        for word, positions in labels_of.items()
    }


# The share of label and json answers each model gets right on the simulator unless its
# config names another (`accuracy`): a strong model rarely misreads, Haiku about one row in
# seven. Longest prefix first.
BUILT_IN_ACCURACY: tuple[tuple[str, float], ...] = (
    ("claude-opus-5-5", 0.98),
    ("claude-fable-5", 0.98),
    ("claude-mythos", 0.98),
    ("claude-opus-5", 0.97),
    ("claude-sonnet-5-5", 0.96),
    ("claude-sonnet-5", 0.95),
    ("claude-opus-4-8", 0.95),
    ("claude-opus-4-7", 0.95),
    ("claude-opus-4", 0.94),
    ("claude-sonnet-4", 0.93),
    ("claude-haiku-5-5", 0.86),
    ("claude-haiku-4", 0.80),
)


def built_in_accuracy(model: str) -> float:
    return next((share for prefix, share in BUILT_IN_ACCURACY if model.startswith(prefix)), 0.9)


CATCH_ALL_LABELS = ("other", "others", "general", "unknown", "none", "misc")


def catch_all(labels: Sequence[str]) -> str | None:
    """The label a doubtful model reaches for, if the set has one."""
    for fallback in CATCH_ALL_LABELS:
        for label in labels:
            if label.lower() == fallback:
                return label
    return None


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
    return ranked_labels(ticket, labels, definitions)[0]


def ranked_labels(
    ticket: str, labels: Sequence[str], definitions: dict[str, str] | None = None
) -> list[str]:
    """The labels from the most evidence in the ticket to the least; ties keep the listed
    order, and with no evidence at all the catch-all (else the last label) comes first."""
    labels = tuple(labels)
    known = tuple(sorted((definitions or {}).items()))
    index = _evidence_index(labels, tuple(item for item in known if item[0] in labels))
    scores = [0.0] * len(labels)
    for word in _words(ticket):
        for position, weight in index.get(_stem(word), ()):
            scores[position] += weight
    order = sorted(range(len(labels)), key=lambda i: (-scores[i], i))
    if scores[order[0]] == 0:
        first = catch_all(labels) or labels[-1]
        return [first, *(label for label in labels if label != first)]
    return [labels[i] for i in order]


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
