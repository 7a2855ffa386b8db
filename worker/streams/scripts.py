"""Loads the Lua scripts that live beside this module (each documents its KEYS and ARGV)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_HERE = Path(__file__).parent / "lua"


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua``."""
    return (_HERE / f"{name}.lua").read_text()
