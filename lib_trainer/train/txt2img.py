"""Sample images in plain torch: the txt2img backend of every host that does not bring its own.

A sample backend is a callable `(prompt, sampler, seed) -> PIL image` that draws with the
model as it is now (networks attached included). A bundle may hand its host's own one as
`bundle.sample_backend` (the WebUI hands its txt2img, lib_trainer/webui/sampling.py); the
trainer takes that when it is there and this one otherwise, without asking which host it is on.
"""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

from ..dataset.pixels import to_image
from ..hosts.bundle import ModelBundle, uncropped_sizes
from .sample_prompts import SamplePrompt
from .samplers import SAMPLERS

# Sample prompts are read up to this many tokens, the longest captions training reads.
SAMPLE_MAX_TOKENS = 225

SampleBackend = Callable[[SamplePrompt, str, int], Image.Image]


def sample_backend(bundle: ModelBundle) -> SampleBackend:
    """The host's own txt2img if its bundle brings one, else plain torch over the bundle."""
    backend = getattr(bundle, "sample_backend", None)
    if backend is not None:
        return backend
    return lambda prompt, sampler, seed: txt2img(bundle, prompt, sampler, torch.Generator().manual_seed(seed))


@torch.no_grad()
def txt2img(bundle: ModelBundle, prompt: SamplePrompt, sampler: str, generator: torch.Generator) -> Image.Image:
    """Classifier-free guidance with the negative prompt, the sampler's math in samplers.py,
    SDXL conditioned on the image's own size, uncropped. The starting noise (and Euler a's
    noise) comes from `generator`, on its device, so a seed gives the same image on every
    device. Callers set eval mode and, for a model in fp16/bf16, autocast."""
    device = next(bundle.denoiser().parameters()).device
    width, height = prompt.width, prompt.height
    conditioning = bundle.encode_prompts([prompt.prompt, prompt.negative_prompt], SAMPLE_MAX_TOKENS)
    sizes = uncropped_sizes(height, width, 2)

    def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
        timesteps = torch.full((2,), t, dtype=torch.float32, device=device)
        output = bundle.predict(torch.cat([x, x]), timesteps, conditioning, sizes).float()
        positive, negative = output.chunk(2)
        return negative + prompt.cfg_scale * (positive - negative)

    noise = torch.randn((1, 4, height // 8, width // 8), generator=generator, device=generator.device)
    latents = SAMPLERS[sampler].run(denoise, noise.to(device), bundle.alphas_cumprod, bundle.prediction_type,
                                    prompt.steps, generator)
    with torch.autocast(device.type, enabled=False):  # SD's VAE overflows in fp16; it decodes in its own dtype
        pixels = bundle.decode_latents(latents)
    return to_image(pixels[0])
