"""The config checks of the caption, augmentation and loss-mask options (TrainConfig.problems
calls them); what needs the dataset itself (missing mask files) is checked in dataset/masks.py."""
from __future__ import annotations

import os


def parse_face_crop_range(text: str) -> tuple[float, float] | None:
    """'2.0,4.0' -> (2.0, 4.0); '' -> None. ValueError names what is wrong."""
    if not text.strip():
        return None
    parts = [part.strip() for part in text.split(",")]
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ValueError("write two numbers, low,high (e.g. 2.0,4.0)") from None
    if not 0 < low <= high:
        raise ValueError("the numbers must be above 0, the first not larger than the second")
    return low, high


def caption_image_problems(config) -> list[str]:
    found = []
    for name in ("keep_tokens_separator", "secondary_separator"):
        if getattr(config, name) and getattr(config, name).strip() == config.caption_separator.strip():
            found.append(f"{name}={getattr(config, name)!r} is the caption_separator: choose another, e.g. "
                         f"{'|||' if name == 'keep_tokens_separator' else ';;;'}")
    if config.cache_text_encoder_outputs:
        varying = [name for name in ("enable_wildcard", "caption_dropout_every_n_epochs", "token_warmup_step")
                   if getattr(config, name)]
        found += [f"cache_text_encoder_outputs needs fixed captions: turn off {name}" for name in varying]
        if config.weighted_captions:  # kohya refuses this pair too
            found.append("weighted_captions cannot be used with cache_text_encoder_outputs: turn one off")
    if config.color_aug and config.cache_latents:
        found.append("color_aug needs fresh pixels every step: turn off cache_latents (--no-cache_latents)")
    try:
        if parse_face_crop_range(config.face_crop_aug_range) is not None:
            if config.enable_bucket:
                found.append("face_crop_aug_range crops to the resolution without buckets (as in kohya): turn off "
                             "enable_bucket (--no-enable_bucket)")
            if config.cache_latents:
                found.append("face_crop_aug_range needs a fresh crop every step: turn off cache_latents "
                             "(--no-cache_latents)")
    except ValueError as error:
        found.append(f"face_crop_aug_range={config.face_crop_aug_range!r}: {error}")
    found += _mask_problems(config)
    return found


def _mask_problems(config) -> list[str]:
    folder = config.conditioning_data_dir
    if config.masked_loss and not folder and not config.alpha_mask:
        return ["masked_loss needs its masks: give conditioning_data_dir (a folder of mask images named like the "
                "training images), or set alpha_mask to use the pictures' transparency"]
    if folder and not config.masked_loss:
        return [f"conditioning_data_dir={folder} is set but masked_loss is off: set masked_loss to train with "
                "its masks, or clear conditioning_data_dir"]
    if folder and config.alpha_mask:
        return ["alpha_mask and masked_loss with conditioning_data_dir are two sources of masks: use one"]
    if folder and not os.path.isdir(folder):
        return [f"conditioning_data_dir {folder} is not a folder: give the folder of mask images"]
    return []
