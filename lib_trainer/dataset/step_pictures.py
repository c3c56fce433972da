"""One step's pictures when latents are not cached: where each is cut out (the bucket's centre,
random_crop, or a face-centred crop), its pixels (resize_interpolation, color_aug, flip), its
SDXL size conditioning and its loss mask, all from the same cut."""
from __future__ import annotations

import random

import torch

from .buckets import Placement
from .caption_image_checks import parse_face_crop_range
from .dataset_config import example_random_crop
from .face_crop import face_from_name, face_view
from .masks import mask_source
from .pixels import crop_box, load_pixels, size_condition
from .training_set import Example

View = tuple[Placement, tuple[int, int]]  # where the picture is resized to, the crop's top-left corner


class StepPictures:
    def __init__(self, config) -> None:
        self.config = config  # random_crop may be a dataset config subset's
        self.interpolation = config.resize_interpolation
        self.color_aug = config.color_aug
        self.face_range = parse_face_crop_range(config.face_crop_aug_range)
        self.masks = mask_source(config)

    def views(self, batch: list[Example], rng: random.Random) -> list[View]:
        return [self._view(example, rng) for example in batch]

    def _view(self, example: Example, rng: random.Random) -> View:
        random_crop = example_random_crop(self.config, example)
        face = face_from_name(example.path) if self.face_range else None
        if face is not None:
            return face_view(example.item.size, example.placement.bucket, face, self.face_range, random_crop, rng)
        return example.placement, crop_box(example.placement, random_crop, rng)

    def pixels(self, batch: list[Example], views: list[View], flips: list[bool], rng: random.Random) -> torch.Tensor:
        color_rng = rng if self.color_aug else None
        return torch.stack([load_pixels(e.path, placement, corner, flip, self.interpolation, color_rng)
                            for e, (placement, corner), flip in zip(batch, views, flips)])

    @staticmethod
    def sizes(batch: list[Example], views: list[View]) -> torch.Tensor:
        return torch.tensor([size_condition(e.item.size, placement, corner)
                             for e, (placement, corner) in zip(batch, views)])

    def loss_masks(self, batch: list[Example], views: list[View], flips: list[bool],
                   latent_size: tuple[int, int]) -> torch.Tensor | None:
        if self.masks is None:
            return None
        return torch.stack([self.masks.load(e.path, placement, corner, flip, latent_size)
                            for e, (placement, corner), flip in zip(batch, views, flips)])
