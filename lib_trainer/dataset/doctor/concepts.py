"""Per-concept checks: image count against the tutorials' range, repeats and the share of
each epoch, the regularisation balance, and buckets that hold a single image."""
from __future__ import annotations

import os
from collections import Counter

from ..training_set import TrainingSet
from .report import FINE, LOOK, PROBLEM, Finding

FEW_IMAGES, ENOUGH_IMAGES, TYPICAL_MAX = 10, 15, 50
IMBALANCE = 3.0  # one concept seen this many times as often per image as another


def concept_rows(training_set: TrainingSet) -> list[dict]:
    """folder, images, repeats and share of each epoch's examples, per training concept."""
    rows = []
    total = max(1, training_set.num_train_images)
    for concept in training_set.scan.concepts:
        if concept.is_reg:
            continue
        count = sum(1 for item in training_set.scan.items if item.concept is concept)
        rows.append({"folder": os.path.basename(concept.folder), "images": count, "repeats": concept.repeats,
                     "share": count * concept.repeats / total})
    return rows


def concept_findings(training_set: TrainingSet) -> list[Finding]:
    rows = concept_rows(training_set)
    found = []
    for row in rows:
        folder, count = row["folder"], row["images"]
        if count < FEW_IMAGES:
            found.append(Finding(PROBLEM, "few images", f"{folder} has {count} images: the tutorials ask for at "
                                 f"least {ENOUGH_IMAGES} good pictures (20-50 typical)",
                                 "add pictures of the subject in other poses, places and lighting", [], folder))
        elif count < ENOUGH_IMAGES:
            found.append(Finding(LOOK, "few images", f"{folder} has {count} images; {ENOUGH_IMAGES} or more "
                                 "(20-50 typical) give a more flexible LoRA", "add a few more pictures if you can",
                                 [], folder))
        found.append(Finding(FINE, "concept", f"{folder}: {count} images x {row['repeats']} repeats = "
                             f"{count * row['repeats']} examples, {row['share']:.0%} of each epoch", "nothing to do",
                             [], folder, dict(row)))
    if len(rows) > 1:
        found += _balance_findings(rows)
    found += _reg_findings(training_set)
    found += bucket_findings(training_set)
    return found


def _balance_findings(rows: list[dict]) -> list[Finding]:
    most = max(rows, key=lambda r: r["repeats"])
    least = min(rows, key=lambda r: r["repeats"])
    shares = [r["share"] for r in rows]
    if most["repeats"] < IMBALANCE * least["repeats"] and max(shares) < IMBALANCE * min(shares):
        return []
    return [Finding(LOOK, "concept balance",
                    f"each image of {most['folder']} ({most['images']} x {most['repeats']}) is seen "
                    f"{most['repeats'] / least['repeats']:.0f}x as often as one of {least['folder']} "
                    f"({least['images']} x {least['repeats']}); shares of the epoch "
                    + ", ".join(f"{r['folder']} {r['share']:.0%}" for r in rows),
                    "give the concepts similar images x repeats (the step planner proposes repeats), or add "
                    "pictures to the small one", [], "", {"concepts": rows})]


def _reg_findings(training_set: TrainingSet) -> list[Finding]:
    reg_images = sum(1 for e in training_set.examples if e.item.concept.is_reg)
    if not reg_images:
        return []
    train, used = training_set.num_train_images, training_set.num_reg_images
    used_images = len({e.path for e in training_set.epoch_examples if e.item.concept.is_reg})
    if used_images < reg_images:
        return [Finding(LOOK, "regularisation", f"only {used_images} of {reg_images} regularisation images are used: "
                        f"kohya takes as many as there are training examples ({train})",
                        "fine as it is; fewer reg images would do the same", [])]
    if used > 2 * reg_images:
        return [Finding(LOOK, "regularisation", f"{reg_images} regularisation images are repeated to {used} "
                        f"examples to match the {train} training examples",
                        "add regularisation images of the class, so each is not seen so often", [])]
    return [Finding(FINE, "regularisation", f"{reg_images} regularisation images, {used} examples per epoch "
                    f"against {train} training examples", "nothing to do", [])]


def bucket_findings(training_set: TrainingSet) -> list[Finding]:
    """Buckets of one image: that image always trains alone (its batch is one image), and many
    such buckets mean the pictures' shapes vary a lot."""
    train = [e for e in training_set.examples if not e.item.concept.is_reg]
    counts = Counter(e.placement.bucket for e in train)
    if len(train) < 2:
        return []
    alone = [e for e in train if counts[e.placement.bucket] == 1]
    found = []
    for example in alone:
        width, height = example.placement.bucket
        found.append(Finding(LOOK, "bucket of one", f"{os.path.basename(example.path)} is the only picture in "
                             f"bucket {width}x{height} ({len(counts)} buckets for {len(train)} images)",
                             "crop it to the shape of the others, or add pictures of that shape",
                             [example.path], data={"bucket": [width, height]}))
    return found
