"""Weight lists as the WebUI's X/Y/Z plot reads them, so users type what they already know.

`0.6,0.8,1` is a list; `0.6-1 (+0.1)` a range with a step (the end included when the steps
reach it); `0-1 [5]` a range of five evenly spaced values; `0-2` a range in steps of 1.
Parts mix: `0, 0.5-1 (+0.25)`.
"""
from __future__ import annotations

import re

from ..errors import InvalidInput

MAX_VALUES = 50  # a typo such as `0-100 (+0.1)` would draw a thousand rows of images
_NUMBER = r"[+-]?\s*\d+(?:\.\d*)?|[+-]?\s*\.\d+"
_STEP_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\(\s*({_NUMBER})\s*\)\s*$")
_COUNT_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\[\s*(\d+)\s*\]\s*$")
_PLAIN_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*$")


def parse_numbers(text: str, name: str = "weights") -> list[float]:
    """The numbers `text` lists; raises InvalidInput naming the part that is not one."""
    values: list[float] = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        values.extend(_part_values(part, name))
    if not values:
        raise InvalidInput(f"{name}: give at least one number, e.g. 0.6,0.8,1 or 0.6-1 (+0.1)")
    if len(values) > MAX_VALUES:
        raise InvalidInput(f"{name}: {text!r} gives more than {MAX_VALUES} values; at most {MAX_VALUES} make one grid")
    return values


def _part_values(part: str, name: str) -> list[float]:
    step_range, count_range, plain_range = (pattern.match(part) for pattern in (_STEP_RANGE, _COUNT_RANGE,
                                                                                  _PLAIN_RANGE))
    if step_range or plain_range:
        bounds = step_range or plain_range
        start, end = _number(bounds.group(1)), _number(bounds.group(2))
        step = _number(step_range.group(3)) if step_range else 1.0
        if step == 0 or (end - start) * step < 0:
            raise InvalidInput(f"{name}: {part!r} never reaches {end:g} with a step of {step:+g}")
        count = int((end - start) / step + 1e-9) + 1
        return [round(start + index * step, 10) for index in range(min(count, MAX_VALUES + 1))]
    if count_range:
        start, end = _number(count_range.group(1)), _number(count_range.group(2))
        count = int(count_range.group(3))
        if count < 1:
            raise InvalidInput(f"{name}: {part!r} asks for no values")
        if count == 1:
            return [start]
        count = min(count, MAX_VALUES + 1)
        return [round(start + (end - start) * index / (count - 1), 10) for index in range(count)]
    try:
        return [_number(part)]
    except ValueError:
        raise InvalidInput(f"{name}: {part!r} is not a number or a range like 0.6-1 (+0.1) or 0-1 [5]") from None


def _number(text: str) -> float:
    return float(text.replace(" ", ""))
