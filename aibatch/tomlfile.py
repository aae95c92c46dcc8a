"""Reading a user's TOML file into a Pydantic model, with errors that name the file and the
entry at fault (the price table and the model table are both laid over from such files)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

Parsed = TypeVar("Parsed", bound=BaseModel)


def read_toml(file: Path, shape: type[Parsed], what: str, error: type[ValueError]) -> Parsed:
    """`file` parsed as `shape`; `error` (a ValueError) naming the file and each bad entry."""
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{file}: cannot read the {what}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{file}: not a TOML {what}: {exc}") from None
    try:
        return shape.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise error(f"{file}: {problems}") from None


def overlay_file(path: str | Path | None, env: str) -> Path | None:
    """The file laid over a built-in table: `path` if given, else $`env`, else none."""
    chosen = path if path is not None else os.environ.get(env) or None
    return None if chosen is None else Path(chosen)
