"""Reading pictures the way users expect: EXIF rotation applied, transparency on white."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from ..errors import UserError

# kohya's formats, plus TIFF and GIF (its first frame), which PIL reads everywhere.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Picture formats PIL cannot read without a plugin: listed as skipped, never silently left out.
UNSUPPORTED_EXTENSIONS = (".avif", ".heic", ".heif", ".jxl", ".psd", ".svg", ".raw", ".cr2", ".nef", ".dng")


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


def unusable_files(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, reason) of the pictures in `folder` that `list_images` leaves out although the
    user meant them: formats PIL cannot read, and links that lead nowhere or in a loop."""
    folder = os.fspath(folder)
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            continue
        extension = os.path.splitext(name)[1].lower()
        if os.path.islink(path) and not os.path.exists(path):
            if extension in IMAGE_EXTENSIONS or extension in UNSUPPORTED_EXTENSIONS:
                found.append((path, f"broken link (to {os.readlink(path)}): it leads to no file, or in a loop"))
        elif extension in UNSUPPORTED_EXTENSIONS:
            found.append((path, f"format not supported ({extension}): convert it to PNG or JPEG"))
    return found


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF rotation, reading only the header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception as error:  # PIL raises many types for broken files
        raise ImageReadError(f"{path}: cannot read image ({error}); remove or re-save it") from error
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def decoded_size(path: str | os.PathLike) -> tuple[int, int]:
    """`image_size`, after decoding the whole file: a truncated or corrupt picture fails here,
    at scan time, not in the middle of a run. A JPEG decodes at 1/8 scale (it still reads
    every byte of its data, at a fraction of the cost)."""
    size = image_size(path)
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as error:  # PIL raises many types for broken files
        raise ImageReadError(f"{path}: cannot read image ({error}); remove or re-save it") from error
    return size


def decoded_sizes(paths: list[str]) -> list[tuple[int, int] | ImageReadError]:
    """`decoded_size` of each path, in order, in a few threads (PIL decodes outside the GIL);
    an unreadable file gives its ImageReadError in its place."""
    def size_or_error(path: str):
        try:
            return decoded_size(path)
        except ImageReadError as error:
            return error

    if len(paths) < 8:
        return [size_or_error(path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(size_or_error, paths))


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
    image = eight_bit(image)
    if background is None:
        return image.convert("RGBA") if has_transparency(image) else image.convert("RGB")
    return flatten(image, background)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The picture as RGB, rotated per EXIF, with any transparency flattened on white."""
    return load_picture(path, "white")


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale (modes I;16, I, F) as 8-bit L over their real range. PIL's
    own conversion clips them at 255, which makes a 16-bit picture near-white. (16-bit RGB and
    greyscale-with-alpha PNGs PIL already opens as 8-bit RGB / RGBA.)"""
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        values = values / 257.0  # 65535 -> 255
    elif image.mode == "F" and values.max(initial=0) <= 1.0:
        values = values * 255.0  # floats in 0..1
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


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
