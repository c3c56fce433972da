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
    """Image files directly inside `folder`, sorted by name (not recursive). Hidden files are
    left out, as kohya's glob leaves them out: `.name.png` is meant to be hidden, and macOS's
    AppleDouble `._name.png` files are not images at all."""
    folder = os.fspath(folder)
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if is_image_file(name) and not name.startswith(".") and os.path.isfile(os.path.join(folder, name))
    )


def hidden_images(folder: str | os.PathLike) -> int:
    """How many hidden files with an image extension `list_images` leaves out."""
    return sum(1 for name in os.listdir(folder) if name.startswith(".") and is_image_file(name))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF rotation, reading only the header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception as error:  # PIL raises many types for broken files
        raise ImageReadError(f"{path}: cannot read image ({error}); remove or re-save it") from error
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def load_picture(path: str | os.PathLike, background: str | None = "white") -> Image.Image:
    """The one image loader of the dataset and the preprocess step, so both see the same
    pixels: upright per EXIF, and any kind of transparency (alpha channel, a palette or
    grey/RGB tRNS colour key) flattened on `background`; RGBA when `background` is None."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: too large to open safely ({error}); downscale it first") from error
    except Exception as error:  # PIL raises many types for broken files
        raise ImageReadError(f"{path}: cannot read image ({error}); remove or re-save it") from error
    if background is None:
        return image.convert("RGBA") if has_transparency(image) else image.convert("RGB")
    return flatten(image, background)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The picture as RGB, rotated per EXIF, with any transparency flattened on white."""
    return load_picture(path, "white")


def has_transparency(image: Image.Image) -> bool:
    # "transparency" in info is a tRNS chunk: a palette entry or one grey/RGB colour that is
    # transparent, which convert("RGBA") turns into alpha.
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def flatten(image: Image.Image, background: str = "white") -> Image.Image:
    """RGB, with transparent areas showing `background` (a colour name or #rrggbb)."""
    if not has_transparency(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    try:
        backdrop = Image.new("RGBA", rgba.size, background)
    except ValueError as error:
        raise ValueError(f"background colour {background!r} is not a colour name or #rrggbb") from error
    return Image.alpha_composite(backdrop, rgba).convert("RGB")


def flatten_on_white(image: Image.Image) -> Image.Image:
    return flatten(image, "white")
