"""Weight lists as the WebUI's X/Y/Z plot reads them, so users type what they already know.

`0.6,0.8,1` is a list; `0.6-1 (+0.1)` a range with a step (the end included when the steps
reach it); `0-1 [5]` a range of five evenly spaced values. Parts mix: `0, 0.5-1 (+0.25)`.
"""
from __future__ import annotations

import re

from ..errors import InvalidInput

_NUMBER = r"[+-]?\s*\d+(?:\.\d*)?|[+-]?\s*\.\d+"
_STEP_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\(\s*({_NUMBER})\s*\)\s*$")
_COUNT_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\[\s*(\d+)\s*\]\s*$")


def parse_numbers(text: str, name: str = "weights") -> list[float]:
    """The numbers `text` lists; raises InvalidInput naming the part that is not one."""
    values: list[float] = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        values.extend(_part_values(part, name))
    if not values:
        raise InvalidInput(f"{name}: give at least one number, e.g. 0.6,0.8,1 or 0.6-1 (+0.1)")
    return values


def _part_values(part: str, name: str) -> list[float]:
    step_range, count_range = _STEP_RANGE.match(part), _COUNT_RANGE.match(part)
    if step_range:
        start, end, step = (_number(group) for group in step_range.groups())
        if step == 0 or (end - start) * step < 0:
            raise InvalidInput(f"{name}: {part!r} never reaches {end:g} with a step of {step:+g}")
        count = int((end - start) / step + 1e-9) + 1
        return [round(start + index * step, 10) for index in range(count)]
    if count_range:
        start, end = _number(count_range.group(1)), _number(count_range.group(2))
        count = int(count_range.group(3))
        if count < 1:
            raise InvalidInput(f"{name}: {part!r} asks for no values")
        if count == 1:
            return [start]
        return [round(start + (end - start) * index / (count - 1), 10) for index in range(count)]
    try:
        return [_number(part)]
    except ValueError:
        raise InvalidInput(f"{name}: {part!r} is not a number or a range like 0.6-1 (+0.1) or 0-1 [5]") from None


def _number(text: str) -> float:
    return float(text.replace(" ", ""))
