"""Column-name normalisation: lower snake_case ("measure 1" -> measure_1, FlowId -> flow_id)."""

from __future__ import annotations

import functools
import re

_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")


@functools.lru_cache(maxsize=4096)
def snake_case(name: str) -> str:
    """Lower snake_case of an API column name; never empty."""
    text = _CAMEL_1.sub(r"\1_\2", name.strip())
    text = _CAMEL_2.sub(r"\1_\2", text)
    text = _NON_WORD.sub("_", text).strip("_").lower()
    if not text:
        return "column"
    if text[0].isdigit():
        text = f"_{text}"
    return text


def unique_names(names: list[str]) -> list[str]:
    """snake_case every name; suffix _2, _3 ... where two columns collide."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        base = snake_case(name)
        count = seen.get(base, 0) + 1
        seen[base] = count
        out.append(base if count == 1 else f"{base}_{count}")
    return out
