"""The model names the installed anthropic SDK knows, read from its source.

Model names move (the SDK warns when one nears end of life), so aibatch never keeps its
own list. The names are read from the SDK's source files as text instead of by importing
them, because importing the SDK costs seconds and the simulator's process would pay that
on every start. They are read with `tokenize`, not `ast`: CPython 3.11's `ast.parse` is not
thread-safe ("AST constructor recursion depth mismatch" when another thread, Prefect's in
a flow run, parses at the same moment).
"""

from __future__ import annotations

import importlib.util
import io
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path


def _sdk_file(*parts: str) -> Path | None:
    spec = importlib.util.find_spec("anthropic")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent.joinpath(*parts)


def _tokens(source: Path) -> Iterator[tokenize.TokenInfo]:
    text = source.read_text(encoding="utf-8")
    return tokenize.generate_tokens(io.StringIO(text).readline)


def _plain_string(token: tokenize.TokenInfo) -> str | None:
    """The value of a plain quoted literal ("claude-..."), or None for anything else."""
    text = token.string
    if token.type != tokenize.STRING or len(text) < 2 or text[0] not in "\"'":
        return None
    if text[-1] != text[0] or text.startswith(text[0] * 3) or "\\" in text:
        return None
    return text[1:-1]


@cache
def known_models() -> tuple[str, ...]:
    """Every literal model name in the SDK's `ModelParam`, newest first as the SDK lists them."""
    source = _sdk_file("types", "model_param.py")
    if source is None:
        raise RuntimeError("the anthropic SDK is not installed")
    names = [
        value
        for token in _tokens(source)
        if (value := _plain_string(token)) is not None and value.startswith("claude-")
    ]
    if not names:
        raise RuntimeError(f"no model names found in {source}")
    return tuple(dict.fromkeys(names))


@cache
def deprecated_models() -> dict[str, str]:
    """Model name → end-of-life date, as the SDK's messages resource warns about them."""
    source = _sdk_file("resources", "messages", "messages.py")
    if source is None or not source.exists():
        return {}
    found: dict[str, str] = {}
    inside, key = False, None
    previous: list[str] = []
    for token in _tokens(source):
        if not inside:
            previous = [*previous[-2:], token.string]
            inside = previous == ["DEPRECATED_MODELS", "=", "{"]
            continue
        if token.type == tokenize.OP and token.string == "}":
            break
        value = _plain_string(token)
        if value is None:
            continue
        if key is None:
            key = value
        else:
            found[key], key = value, None
    return found
