"""deepbooru and BLIP through the WebUI's own models (modules/deepbooru.py, modules/interrogate.py).

`register_webui_taggers()` (called by scripts/lora_train_tab.py when the WebUI starts) puts
them into the tagger registry of preprocess/tagging.py, with WD14 looking for its models in
the WebUI's models folder; the preprocess code itself never imports the WebUI. The WebUI
loads its models on first use into its models folder (models/torch_deepdanbooru,
models/BLIP) and honours its own settings (deepbooru threshold, BLIP beams and lengths), so
the results match its Interrogate buttons.
"""
from __future__ import annotations

import os

from modules import deepbooru, paths, shared  # ImportError outside the WebUI

from ..preprocess import tagging


def wd14_models_dir() -> str:
    """Where WD14 taggers go inside the WebUI: next to its other models."""
    return os.path.join(paths.models_path, "wd14")


class WebUIDeepbooru:
    """Scores are not exposed by the WebUI's `tag_multi`; each tag gets 1.0 in its order."""

    def tag(self, images):
        deepbooru.model.start()
        try:
            results = []
            for image in images:
                text = deepbooru.model.tag_multi(image, force_disable_ranks=True)
                # tag_multi already applies the WebUI's escaping/underscore options; undo the
                # escaping so our own formatting is applied once.
                tags = [tag.strip().replace("\\(", "(").replace("\\)", ")") for tag in text.split(",") if tag.strip()]
                results.append([(tag, 1.0 - i * 1e-6) for i, tag in enumerate(tags)])
            return results
        finally:
            deepbooru.model.stop()


class WebUIBlip:
    """One sentence per picture from the WebUI interrogator's BLIP model."""

    def tag(self, images):
        interrogator = shared.interrogator
        interrogator.load()
        try:
            return [[(interrogator.generate_caption(image.convert("RGB")).strip(), 1.0)] for image in images]
        finally:
            interrogator.unload()


def make_wd14(options, models_dir: str | None = None, **settings):
    return tagging.make_wd14(options, models_dir=models_dir or wd14_models_dir(), **settings)


def make_deepbooru(options, **settings):
    return WebUIDeepbooru()


def make_blip(options, model_path: str | None = None, **settings):
    """The WebUI's BLIP, unless a local BLIP folder is given."""
    if model_path:
        return tagging.make_blip(options, model_path=model_path, **settings)
    return WebUIBlip()


def register_webui_taggers() -> None:
    for name, factory in (("wd14", make_wd14), ("deepbooru", make_deepbooru), ("blip", make_blip)):
        tagging.register_tagger(name, factory)
