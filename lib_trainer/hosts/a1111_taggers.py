"""deepbooru and BLIP through the WebUI's own models (modules/deepbooru.py, modules/interrogate.py).

Importing this module outside the WebUI raises ImportError; `preprocess/tagging.py` turns
that into a clear message. The WebUI loads the models on first use into its models folder
(models/torch_deepdanbooru, models/BLIP) and honours its own settings (deepbooru threshold,
BLIP beams and lengths), so the results match its Interrogate buttons.
"""
from __future__ import annotations

import os

from modules import deepbooru, paths, shared  # noqa: F401  (ImportError outside the WebUI is the signal)


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
