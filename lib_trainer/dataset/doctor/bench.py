"""Doctor throughput: `python -m lib_trainer bench --doctor` prints images/s.

500 drawn pictures (JPEG and PNG, 768x512 and 512x512, a caption each) are checked the way
a user's folder is (scan, measure, hashes, duplicates, captions with the CLIP token count,
the plan of the folder). The floor, measured in the same run on the same files, is decoding
every picture once with the project's loader, in as many threads: the least any check of the pixels costs.
"""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw

from ...config import TrainConfig
from ...fileio import write_text_atomic


def draw_folder(folder: str, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        size = (768, 512) if index % 3 == 0 else (512, 512)
        image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(40, 220, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(10):
            x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
            w, h = rng.uniform(30, 250, 2)
            draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        extension = ".jpg" if index % 2 else ".png"
        image.save(os.path.join(folder, f"{index:04d}{extension}"), quality=90)
        tags = ["bench"] + [f"tag{int(t)}" for t in rng.integers(0, 60, 8)]
        write_text_atomic(os.path.join(folder, f"{index:04d}.txt"), ", ".join(dict.fromkeys(tags)))


def bench_doctor(count: int = 500) -> dict:
    from ..images import list_images, load_rgb
    from . import default_token_counter, examine

    count_tokens = default_token_counter()
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "10_bench")
        draw_folder(folder, count)
        paths = list_images(folder)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # as many threads as the doctor
            list(pool.map(load_rgb, paths))
        floor = time.perf_counter() - started
        config = TrainConfig().replace(train_data_dir=root, resolution="512")
        started = time.perf_counter()
        report = examine(config, "bench", count_tokens)
        seconds = time.perf_counter() - started
    return {"images": count, "seconds": seconds, "images_per_second": count / seconds,
            "floor_seconds": floor, "floor_images_per_second": count / floor, "x_floor": seconds / floor,
            "findings": report.counts(), "threads": min(4, os.cpu_count() or 1)}


def report_text(result: dict) -> str:
    return (f"doctor on {result['images']} drawn pictures (512x512 and 768x512, PNG and JPEG), "
            f"{result['threads']} threads\n"
            f"{'phase':<32}{'s':>8}{'images/s':>10}{'x floor':>9}\n"
            f"{'decode each picture (floor)':<32}{result['floor_seconds']:>8.2f}"
            f"{result['floor_images_per_second']:>10.1f}{1:>9.2f}\n"
            f"{'doctor (all checks)':<32}{result['seconds']:>8.2f}{result['images_per_second']:>10.1f}"
            f"{result['x_floor']:>9.2f}\n"
            f"findings: {result['findings']}")
