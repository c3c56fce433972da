"""The prompts an embedding trains with: the captions with its name in place of the concept's
word, or template lines as in the WebUI's textual_inversion_templates (`[name]` is the
embedding, `[filewords]` the image's caption), one line drawn per image and step.
"""
from __future__ import annotations

import os
import random

from ..config import ConfigError
from .captions import join_tags, split_tags

SUBJECT = ("a photo of a [name]", "a close photo of the [name]", "a bright picture of a [name]",
           "a dark picture of the [name]", "a small [name]", "a large [name]", "the [name] in a picture",
           "a good photo of one [name]", "a blurry photo of the [name]", "a cropped picture of a [name]")
STYLE = ("a painting in the style of [name]", "a picture in the style of [name]", "an artwork by [name]",
         "a drawing in the style of [name]", "a scene, [name] style", "a portrait in the style of [name]",
         "a landscape in the style of [name]", "an illustration, style of [name]")
TEMPLATES = {"subject": SUBJECT, "style": STYLE,
             "subject_filewords": tuple(f"{line}, [filewords]" for line in SUBJECT),
             "style_filewords": tuple(f"{line}, [filewords]" for line in STYLE)}
CAPTIONS = "captions"


def template_name(config) -> str:
    """The template a config chooses; sd-scripts' flags name the subject or style one."""
    if config.use_object_template:
        return "subject"
    if config.use_style_template:
        return "style"
    return config.embedding_template or CAPTIONS


def template_lines(choice: str) -> tuple[str, ...] | None:
    """The lines of a template (None for the captions themselves); raises ConfigError for a
    file that cannot be used."""
    if choice == CAPTIONS:
        return None
    if choice in TEMPLATES:
        return TEMPLATES[choice]
    if not os.path.isfile(choice):
        raise ConfigError(f"embedding_template={choice!r} is neither {', '.join((CAPTIONS, *TEMPLATES))} nor a "
                          ".txt file that exists")
    try:
        with open(choice, encoding="utf-8-sig") as handle:
            lines = tuple(line.strip() for line in handle if line.strip())
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"embedding_template {choice}: cannot be read as UTF-8 text ({error})") from None
    if not lines or not any("[name]" in line for line in lines):
        raise ConfigError(f"embedding_template {choice}: no line has [name], so the embedding would never "
                          "be in a prompt")
    return lines


class EmbeddingPrompts:
    """caption -> the prompt one step trains the embedding with."""

    def __init__(self, name: str, word: str, lines: tuple[str, ...] | None, separator: str = ",") -> None:
        self.name, self.word, self.lines, self.separator = name, word.strip(), lines, separator

    def __call__(self, caption: str, rng: random.Random | None) -> str:
        if self.lines is None:
            return self._with_name(caption)
        line = self.lines[rng.randrange(len(self.lines))] if rng is not None else self.lines[0]
        return line.replace("[name]", self.name).replace("[filewords]", self._without_word(caption))

    def _with_name(self, caption: str) -> str:
        """The word replaced by the name where it is a tag, or the name put first."""
        tags = split_tags(caption, self.separator)
        if self.word and self.word in tags:
            return join_tags([self.name if tag == self.word else tag for tag in tags], self.separator)
        return join_tags([self.name, *tags], self.separator)

    def _without_word(self, caption: str) -> str:
        return join_tags([tag for tag in split_tags(caption, self.separator) if tag != self.word], self.separator)
