"""Reading pictures the way users expect: EXIF rotation applied, transparency on white."""
from __future__ import annotations

import os

from PIL import Image, ImageOps

from ..errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageReadError(UserError, ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def is_image_file(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files directly inside `folder`, sorted by name (not recursive)."""
    folder = os.fspath(folder)
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if is_image_file(name) and os.path.isfile(os.path.join(folder, name))
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF rotation, reading only the header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception as error:  # PIL raises many types for broken files
        raise ImageReadError(f"{path}: cannot read image ({error}); remove or re-save it") from error
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The picture as RGB, rotated per EXIF, with any transparency flattened on white."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except Exception as error:
        raise ImageReadError(f"{path}: cannot read image ({error}); remove or re-save it") from error
    return flatten_on_white(image)


def flatten_on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
