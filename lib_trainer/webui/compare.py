"""Grid cells drawn by the WebUI's own txt2img, the network applied by its built-in Lora.

Each cell's prompt gets `<lora:name:te:unet>` (a hypernetwork's `<hypernet:name:w>`; an
embedding's file name stands in the prompt in place of its word), so the grid shows exactly
what the user gets when typing that prompt later, and each image's infotext (with its `Lora hashes`) carries it.
The WebUI's sampler of the same name draws it; the base model's column has no tag.
"""
from __future__ import annotations

from ..compare.grid import Cell, CompareStopped, GridRequest, network_tag
from ..train.samplers import SAMPLERS


def webui_cell_prompt(cell: Cell) -> str:
    """The cell's prompt and its file's tag; an embedding file is named in the prompt itself
    (its name in place of the run's word), which the WebUI's embedding database resolves."""
    tag = network_tag(cell.file, cell.weight, cell.weight) if cell.file is not None else ""
    return f"{cell.prompt} {tag}" if tag else cell.prompt


def webui_draw_cell(cell: Cell, request: GridRequest):
    # Imported on use: the WebUI's processing module is heavy and imports most of the WebUI.
    from modules import processing, shared

    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model, prompt=webui_cell_prompt(cell), negative_prompt=request.negative_prompt,
        seed=request.seed, sampler_name=SAMPLERS[request.sampler].webui_name, steps=request.steps,
        cfg_scale=request.cfg_scale, width=request.width, height=request.height,
        do_not_save_samples=True, do_not_save_grid=True)
    try:
        processed = processing.process_images(p)
        if not processed.images:  # Interrupt before the image was begun: the WebUI returns none
            raise CompareStopped("the grid was interrupted")
        # Without scripts, the WebUI builds an image's infotext from the prompts it took the
        # <lora:> tags out of (processing.py puts them back only for script runs). Built from
        # the prompts as given, the infotext says which file and weight the cell has.
        infotext = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, index=0,
                                              all_negative_prompts=p.all_negative_prompts)
    finally:
        p.close()
    return processed.images[0], infotext
