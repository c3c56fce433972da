"""sd-scripts' sample prompt files: one prompt per line, with inline options.

    masterpiece, sks dog on a beach --n lowres, blurry --w 512 --h 768 --s 20 --l 7 --d 1234

Blank lines and lines starting with # are skipped. The options are kohya's letters (in
either case): --n negative prompt, --w width, --h height, --s steps (1-1000), --l CFG
scale, --d seed, --ss sampler for this prompt only (e.g. euler_a). What a line leaves out
takes kohya's defaults: no negative prompt, 512x512, 30 steps, CFG scale 7.5; without
--d the seed comes from the run's seed (see sampling.py), so runs repeat.

Width and height are rounded down to a multiple of 8, the VAE's factor, as sd-scripts
does, and must be at least 64.

sd-scripts skips an option it cannot read (a typo, a value that is not a number, an
option meant for other models such as --g or --cn) and generates anyway; here every such
option is an error naming the file and the line, checked before training starts, so a
sample never quietly differs from what the file asks for. Only .txt files are read, not
sd-scripts' .toml and .json prompt files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .samplers import SAMPLERS
from ..errors import UserError

SIZE_MULTIPLE = 8
MIN_SIZE = 64
MAX_STEPS = 1000

# An option starts with "--" and a letter, at the start of the line or after whitespace,
# so "a--b" or a lone "--" stay in the prompt.
_OPTION_START = re.compile(r"(?:^|\s+)--(?=[A-Za-z])")
_WHOLE_NUMBER = re.compile(r"\d+")


class SamplePromptError(UserError, ValueError):
    """A prompt file that cannot be used; the message names every bad line."""


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    cfg_scale: float = 7.5
    seed: int | None = None      # None: derived from the run's seed
    sampler: str | None = None   # None: the run's sample_sampler


def _whole(value: str) -> int:
    if not _WHOLE_NUMBER.fullmatch(value):
        raise ValueError("expected a whole number")
    return int(value)


def _size(value: str) -> int:
    pixels = _whole(value)
    if pixels < MIN_SIZE:
        raise ValueError(f"must be at least {MIN_SIZE} pixels")
    return pixels - pixels % SIZE_MULTIPLE


def _steps(value: str) -> int:
    steps = _whole(value)
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}")
    return steps


def _scale(value: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        raise ValueError("expected a number such as 7 or 7.5") from None
    if not 0 <= scale < float("inf"):
        raise ValueError("expected a number of 0 or more")
    return scale


def _seed(value: str) -> int:
    seed = _whole(value)
    if seed >= 2 ** 64:
        raise ValueError("seeds must be below 2**64")
    return seed


def _sampler(value: str) -> str:
    if value not in SAMPLERS:
        raise ValueError(f"not a sampler available here: {', '.join(SAMPLERS)}")
    return value


# option letter -> (SamplePrompt field, function that reads and checks the value)
OPTIONS = {
    "n": ("negative_prompt", str),
    "w": ("width", _size),
    "h": ("height", _size),
    "s": ("steps", _steps),
    "l": ("cfg_scale", _scale),
    "d": ("seed", _seed),
    "ss": ("sampler", _sampler),
}


def parse_prompt_line(line: str) -> SamplePrompt:
    """One prompt line; raises ValueError saying which option is wrong and why."""
    prompt, *options = _OPTION_START.split(line.strip())
    values: dict[str, object] = {}
    for option in options:
        name, *rest = option.split(None, 1)
        name, value = name.lower(), rest[0].strip() if rest else ""
        if name not in OPTIONS:
            known = " ".join(f"--{letter}" for letter in OPTIONS)
            raise ValueError(f"unknown option --{name} (the options are {known})")
        field_name, read = OPTIONS[name]
        if field_name in values:
            raise ValueError(f"--{name} is given twice")
        if not value and name != "n":
            raise ValueError(f"--{name} needs a value")
        try:
            values[field_name] = read(value)
        except ValueError as error:
            raise ValueError(f"--{name} {value}: {error}") from None
    return SamplePrompt(prompt.strip(), **values)


def read_sample_prompts(path: str) -> list[SamplePrompt]:
    """The prompts of a .txt prompt file; every bad line is reported in one error."""
    if not path.lower().endswith(".txt"):
        raise SamplePromptError(f"sample_prompts={path!r}: give a .txt file with one prompt per line "
                                "(sd-scripts' .toml and .json prompt files are not read here)")
    if not os.path.isfile(path):
        raise SamplePromptError(f"sample_prompts={path!r}: the prompt file does not exist")
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: Windows editors may start with a BOM
            lines = handle.read().splitlines()
    except UnicodeDecodeError as error:
        raise SamplePromptError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    prompts, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        try:
            prompts.append(parse_prompt_line(line))
        except ValueError as error:
            problems.append(f"{path}, line {number}: {error}")
    if problems:
        raise SamplePromptError("\n".join(problems))
    if not prompts:
        raise SamplePromptError(f"{path} holds no prompts (only blank lines and # comments)")
    return prompts
