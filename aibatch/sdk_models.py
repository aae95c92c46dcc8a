"""The model names the installed anthropic SDK knows, read from its source.

Model names move (the SDK warns when one nears end of life), so aibatch never keeps its
own list. The names are read from `anthropic/types/model_param.py` as text instead of by
importing it, because importing the SDK costs seconds and the simulator's process would
pay that on every start.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path


@cache
def known_models() -> tuple[str, ...]:
    """Every literal model name in the SDK's `ModelParam`, newest first as the SDK lists them."""
    spec = importlib.util.find_spec("anthropic")
    if spec is None or spec.origin is None:
        raise RuntimeError("the anthropic SDK is not installed")
    source = Path(spec.origin).parent / "types" / "model_param.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, str) and value.startswith("claude-"):
            names.append(value)
    if not names:
        raise RuntimeError(f"no model names found in {source}")
    return tuple(dict.fromkeys(names))


@cache
def deprecated_models() -> dict[str, str]:
    """Model name → end-of-life date, as the SDK's messages resource warns about them."""
    spec = importlib.util.find_spec("anthropic")
    if spec is None or spec.origin is None:
        return {}
    source = Path(spec.origin).parent / "resources" / "messages" / "messages.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "DEPRECATED_MODELS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            value = ast.literal_eval(node.value)
            return {str(k): str(v) for k, v in value.items()}
    return {}
