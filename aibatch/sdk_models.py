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


# Where the SDK keeps its end-of-life table: its own module since 2.15, before that inside
# the messages resource.
_DEPRECATED_MODELS_FILES = (
    ("_data", "deprecated_models.py"),
    ("resources", "messages", "messages.py"),
)


@cache
def deprecated_models() -> dict[str, str]:
    """Model name → end-of-life date, as the installed SDK warns about them.

    RuntimeError when no known file holds the table: a moved constant must not read as "no
    model is retiring"."""
    for parts in _DEPRECATED_MODELS_FILES:
        source = _sdk_file(*parts)
        if source is not None and source.exists():
            found = _dict_literal(source, "DEPRECATED_MODELS")
            if found is not None:
                return found
    raise RuntimeError("the installed anthropic SDK has no DEPRECATED_MODELS table where expected")


def _dict_literal(source: Path, name: str) -> dict[str, str] | None:
    """The string-to-string dict literal assigned to `name` (with or without an annotation),
    or None when the file assigns none."""
    found: dict[str, str] = {}
    inside, seen_name, key = False, False, None
    for token in _tokens(source):
        if not inside:
            if token.type == tokenize.NAME and token.string == name:
                seen_name = True
            elif seen_name and token.type == tokenize.OP and token.string == "{":
                inside = True
            elif token.type in (tokenize.NEWLINE, tokenize.NL) and seen_name:
                seen_name = False
            continue
        if token.type == tokenize.OP and token.string == "}":
            return found
        value = _plain_string(token)
        if value is None:
            continue
        if key is None:
            key = value
        else:
            found[key], key = value, None
    return None
