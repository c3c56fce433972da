"""Sample images through the WebUI's own txt2img: its sampler of the same name, its prompt
handling and VAE decode, with the training network attached to the loaded model.

`WebUIBundle.sample_backend` hands this to the trainer (train/txt2img.py). The WebUI's
txt2img reseeds torch's global generator from the sample's seed; the trainer's sampling
round (train/sampling.py) gives every generator back afterwards.
"""
from __future__ import annotations

from ..train.samplers import SAMPLERS


def webui_txt2img(sd_model, prompt, sampler: str, seed: int):
    # Imported on use: the WebUI's processing module is heavy and imports most of the WebUI.
    from modules import processing

    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=sd_model, prompt=prompt.prompt, negative_prompt=prompt.negative_prompt,
        seed=seed, sampler_name=SAMPLERS[sampler].webui_name, steps=prompt.steps,
        cfg_scale=prompt.cfg_scale, width=prompt.width, height=prompt.height,
        do_not_save_samples=True, do_not_save_grid=True)
    # <lora:...> in a sample prompt would merge another network into the weights being trained.
    p.disable_extra_networks = True
    # Conditioning caches are class-wide: keep ours apart, since the text LoRA changes every step.
    p.cached_c, p.cached_uc = [None, None], [None, None]
    try:
        return processing.process_images(p).images[0]
    finally:
        p.close()
