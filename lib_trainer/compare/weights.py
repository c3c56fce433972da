"""The Compare sub-tab's weights field, read as the WebUI's X/Y/Z plot reads a number axis, so
users type what they already know there: `0.6,0.8,1` is a list, `0.6-1 (+0.1)` a range with
a step (its end included when the steps reach it), `0-1 [5]` five evenly spaced values. Parts
mix: `0, 0.5-1 (+0.25)`.
"""
from __future__ import annotations

import re

from ..errors import InvalidInput

_NUMBER = r"[+-]?\d+(?:\.\d*)?|[+-]?\.\d+"
_STEP_RANGE = re.compile(rf"^({_NUMBER})\s*-\s*({_NUMBER})\s*\(\s*({_NUMBER})\s*\)$")
_COUNT_RANGE = re.compile(rf"^({_NUMBER})\s*-\s*({_NUMBER})\s*\[\s*(\d+)\s*\]$")
_PLAIN = re.compile(rf"^({_NUMBER})$")
MAX_WEIGHTS = 50  # a typo such as `0-100 (+0.1)` would queue a thousand rows of images


def parse_weights(text: str) -> list[float]:
    """The weights `text` lists, in its order; raises InvalidInput naming the part that is not
    a number or a range."""
    weights: list[float] = []
    for part in (part.strip() for part in str(text or "").split(",")):
        if part:
            weights.extend(_part(part))
    if not weights:
        raise InvalidInput("weights: give at least one, e.g. 0.6,0.8,1 or 0.6-1 (+0.1)")
    if len(weights) > MAX_WEIGHTS:
        raise InvalidInput(f"weights: {text!r} gives {len(weights)} weights; at most {MAX_WEIGHTS} make one grid")
    return weights


def _part(part: str) -> list[float]:
    plain, stepped, counted = _PLAIN.match(part), _STEP_RANGE.match(part), _COUNT_RANGE.match(part)
    if plain:
        return [float(plain.group(1))]
    if stepped:
        start, end, step = (float(group) for group in stepped.groups())
        if step == 0 or (end - start) * step < 0:
            raise InvalidInput(f"weights: {part!r} never reaches {end:g} in steps of {step:+g}")
        count = int((end - start) / step + 1e-9) + 1  # the end counts when a step lands on it
        return [round(start + index * step, 10) for index in range(min(count, MAX_WEIGHTS + 1))]
    if counted:
        start, end, count = float(counted.group(1)), float(counted.group(2)), int(counted.group(3))
        if count < 1:
            raise InvalidInput(f"weights: {part!r} asks for no values; [n] counts them, at least 1")
        if count == 1:
            return [start]
        count = min(count, MAX_WEIGHTS + 1)
        return [round(start + index * (end - start) / (count - 1), 10) for index in range(count)]
    raise InvalidInput(f"weights: {part!r} is not a number or a range; write e.g. 0.6,0.8,1 or 0.6-1 (+0.1) "
                       "or 0-1 [5]")
