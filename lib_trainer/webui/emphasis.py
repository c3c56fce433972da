"""Training through the WebUI's prompt emphasis without its exploding gradient.

The WebUI's default emphasis ("Original", modules/sd_emphasis.py) multiplies each token's
text-encoder output by its (weight:1.1), then rescales the whole output so its mean is what
it was: z' = z * w * mean(z) / mean(z * w). For generation that is harmless. Trained through,
the rescale's gradient divides by mean(z * w), which for a text encoder whose output mean is
near zero is enormous (and 0/0 when it is zero): the run goes NaN after a step or two, while
"No norm" trains. So while a run trains, "Original" keeps its forward values but holds both
means constant (no gradient flows through them), and captions without emphasis (every weight
1) skip the rescale entirely, since it is the identity for them.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_TINY = 1e-12  # below this the mean is zero for the rescale: it is left out


def emphasis_keeping_mean(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """z * w * mean(z) / mean(z * w), the two means taken as constants; z itself when every
    weight w is 1. `z` is [batch, tokens, channels], `multipliers` [batch, tokens]."""
    multipliers = multipliers.to(z.device, z.dtype)
    if bool((multipliers == 1).all()):
        return z
    weighted = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    original_mean, new_mean = z.detach().mean(), weighted.detach().mean()
    if new_mean.abs() < _TINY:
        return weighted
    return weighted * (original_mean / new_mean)


@contextlib.contextmanager
def emphasis_for_training() -> Iterator[None]:
    """While a run trains, the WebUI's "Original" emphasis is `emphasis_keeping_mean`; the
    other modes (None, Ignore, No norm) have no rescale and stay as they are."""
    try:
        from modules import sd_emphasis
    except ImportError:  # a WebUI (or a stand-in) without emphasis modes
        yield
        return
    original_choice = sd_emphasis.get_current_option

    class OriginalKeepingMean(sd_emphasis.EmphasisOriginal):
        def after_transformers(self):
            self.z = emphasis_keeping_mean(self.z, self.multipliers)

    def choice(name):
        chosen = original_choice(name)
        return OriginalKeepingMean if chosen is sd_emphasis.EmphasisOriginal else chosen

    sd_emphasis.get_current_option = choice
    try:
        yield
    finally:
        sd_emphasis.get_current_option = original_choice
