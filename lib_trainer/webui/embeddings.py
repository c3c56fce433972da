"""The WebUI's textual-inversion embedding database (`sd_hijack.model_hijack.embedding_db`),
seen from training.

- While an embedding trains, its vectors (the trainable parameters themselves) are
  registered in the database, so the WebUI's own prompt handling puts them into prompts that
  name it, and gradients reach them; afterwards the database is read from the embedding
  folders again, as the WebUI would, so it holds what is on disk and nothing of the run.
- After each save the database is reloaded and the WebUI's cached conditioning dropped, so the
  name works in a prompt at once (with the saved vectors), and the
  save is read back through the WebUI's own loader: one it skipped (a width that does not
  fit the loaded model) is reported. The run's vectors are then registered again.
- Anything else may read the folders again while the run trains (the Textual Inversion cards'
  Refresh, the API's refresh-embeddings, a generation after the folder changed), which drops
  the run's vectors from the database: before each prompt encoding they are put back, or the
  step would train nothing and its backward pass fail.
"""
from __future__ import annotations

import logging
import os

from modules import shared, sd_hijack  # ImportError outside the WebUI
from modules.textual_inversion import textual_inversion

from ..errors import InvalidInput
from ..progress import SAVED, Progress, ProgressEvent

log = logging.getLogger("lib_trainer")


def embeddings_folder() -> str:
    return shared.cmd_opts.embeddings_dir


def database():
    return sd_hijack.model_hijack.embedding_db


class TrainingEmbeddings:
    """Context manager: `embeddings` (name -> vectors per text encoder) in the database."""

    def __init__(self, sd_model, embeddings: dict) -> None:
        self.sd_model, self.embeddings = sd_model, embeddings
        self.registered: dict[str, object] = {}  # name -> the WebUI Embedding holding the run's vectors

    def register(self) -> None:
        for name, vectors in self.embeddings.items():
            vec = dict(zip(("clip_l", "clip_g"), vectors)) if len(vectors) == 2 else vectors[0]
            embedding = textual_inversion.Embedding(vec, name)
            embedding.vectors = vectors[0].shape[0]
            embedding.shape = sum(v.shape[-1] for v in vectors)
            database().register_embedding_by_name(embedding, self.sd_model, name)
            self.registered[name] = embedding

    def ensure_registered(self) -> None:
        """The run's vectors back in the database if a reload by someone else dropped them."""
        words = database().word_embeddings
        if any(words.get(name) is not embedding for name, embedding in self.registered.items()):
            log.info("lib_trainer: the WebUI's embeddings were read again while training; the run's vectors "
                     "are put back")
            self.register()

    def __enter__(self):
        self.register()
        return self

    def __exit__(self, *exc) -> None:
        for name in self.embeddings:
            database().register_embedding_by_name(None, self.sd_model, name)
        reload_database()

    def after_save(self, progress: Progress) -> None:
        reload_database()
        db = database()
        for name in self.embeddings:
            if name in db.skipped_embeddings:
                problem = (f"the WebUI skipped the saved embedding {name!r}: its width "
                           f"{db.skipped_embeddings[name].shape} does not fit the loaded model's {db.expected_shape}")
                log.warning(problem)
                progress.status("WARNING: " + problem)
            elif name in db.word_embeddings:
                loaded = db.word_embeddings[name]
                progress.status(f"checked with the WebUI's embedding loader: {name!r} ({loaded.vectors} vectors, "
                                f"{os.path.basename(loaded.filename or '')}) is in its list")
        self.register()  # the reload replaced the run's vectors with the file's copy


def reload_database() -> None:
    try:
        database().load_textual_inversion_embeddings(force_reload=True)
    except Exception as error:  # the WebUI's own loader failing must not end the run
        log.warning("reloading the WebUI's embeddings failed: %s", error)
    forget_cached_conditioning()


# The WebUI's processing classes keep the last prompts' conditioning for the next generation,
# keyed by the prompt text and some settings but not by the embeddings: a prompt written before
# a save would get its old vectors (or, before the first file, none). Reset as processing
# itself does when its persistent_cond_cache setting is off.
CONDITIONING_CACHES = {"StableDiffusionProcessing": ("cached_c", "cached_uc"),
                       "StableDiffusionProcessingTxt2Img": ("cached_hr_c", "cached_hr_uc")}


def forget_cached_conditioning() -> None:
    from modules import processing  # on use: heavy, and imports most of the WebUI

    for class_name, names in CONDITIONING_CACHES.items():
        cls = getattr(processing, class_name, None)
        for name in names:
            if cls is not None and hasattr(cls, name):
                setattr(cls, name, [None, None])


def known_for_grid(names: list[str]) -> None:
    """Read the embedding folders again (files saved since the WebUI last read them are unknown
    to a prompt until it does), then make sure the database has each embedding a grid names:
    a cell whose name it lacks would draw the name as plain text."""
    reload_database()
    db = database()
    problems = []
    for name in names:
        if name in db.skipped_embeddings:
            problems.append(f"{name}: the WebUI skipped it, its width {db.skipped_embeddings[name].shape} does not "
                            f"fit the loaded model's {db.expected_shape}; load the checkpoint it was trained on")
        elif name not in db.word_embeddings:
            problems.append(f"{name}: not among the WebUI's embeddings; put its file in the embeddings folder "
                            f"({embeddings_folder()})")
    if problems:
        raise InvalidInput("; ".join(problems))


class EmbeddingReadBack:
    """A progress sink: after each save, `after_save` of the bundle's registered embeddings."""

    def __init__(self, bundle, progress: Progress) -> None:
        self.bundle, self.progress = bundle, progress

    def __call__(self, event: ProgressEvent) -> None:
        registered = getattr(self.bundle, "training_embeddings", None)
        if event.kind == SAVED and registered is not None:
            registered.after_save(self.progress)
