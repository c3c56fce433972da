"""Tagging throughput: `python -m lib_trainer tag --bench` prints images/s.

Runs the whole path a user's run takes (read pictures, WD14 preparation, batched
onnxruntime inference, formatting, atomic caption writes) with a model of WD14's input
size built on the spot (see wd14_testmodel.py), so it needs no download. A real
WD14 network costs more per image; this measures everything around it plus a few
full-resolution convolutions.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from PIL import Image

from .tagging import TagOptions, WD14Tagger, tag_folder


def bench_tagging(images: int = 64, batch_size: int = 8, size: int = 448, convs: int = 2, use_gpu: bool = False) -> dict:
    from .wd14 import WD14Model
    from .wd14_testmodel import build_wd14_test_model

    tags = [(f"tag_{i}", 0) for i in range(5000)] + [("general", 9), ("explicit", 9)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        model_dir = build_wd14_test_model(os.path.join(root, "model"), tags, rng.uniform(0, 1, len(tags)).tolist(),
                                          size=size, convs=convs)
        data = os.path.join(root, "data")
        os.makedirs(data)
        for i in range(images):
            Image.fromarray(rng.integers(0, 256, (768, 512, 3), dtype=np.uint8)).save(os.path.join(data, f"{i:04d}.jpg"))
        model = WD14Model(model_dir, use_gpu=use_gpu)
        tagger = WD14Tagger(model, 0.35, 0.85)
        tagger.tag([Image.new("RGB", (size, size))])  # warm-up: session set-up is not throughput
        started = time.perf_counter()
        result = tag_folder(data, tagger, TagOptions(batch_size=batch_size, max_tags=40))
        seconds = time.perf_counter() - started
    return {"images": images, "batch_size": batch_size, "input_size": size, "seconds": seconds,
            "images_per_second": images / seconds, "written": len(result.written),
            "providers": model.session.get_providers()}
