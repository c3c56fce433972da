"""sd-scripts' own argument names, so that imports, the export and the option table know
which of its options a name is: read from sd_scripts_args.txt, which is generated from
sd-scripts' argument parsers (tests/tools/sd_scripts_arguments.py says how).

Also the options of sd-scripts' DiT / flow-matching scripts (FLUX, SD3, Lumina, ...), which
this trainer leaves out on purpose: an imported file that sets one is told why.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

TRAIN_NETWORK, SDXL_TRAIN_NETWORK, TEXTUAL_INVERSION = "N", "X", "T"
SCRIPT_NAMES = {TRAIN_NETWORK: "train_network.py", SDXL_TRAIN_NETWORK: "sdxl_train_network.py",
                TEXTUAL_INVERSION: "train_textual_inversion.py"}


class Argument(NamedTuple):
    kind: str      # flag (store_true), int, float, str, int_or_float; a trailing * is a list
    scripts: str   # the letters of the scripts that take it

    @property
    def for_networks(self) -> bool:
        """Taken by train_network.py or sdxl_train_network.py (an exported config's scripts)."""
        return TRAIN_NETWORK in self.scripts or SDXL_TRAIN_NETWORK in self.scripts


@functools.cache
def sd_scripts_arguments() -> dict[str, Argument]:
    path = os.path.join(os.path.dirname(__file__), "sd_scripts_args.txt")
    arguments = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                name, kind, scripts = line.split()
                arguments[name] = Argument(kind, scripts)
    return arguments


def network_argument_names() -> set[str]:
    return {name for name, argument in sd_scripts_arguments().items() if argument.for_networks}


_DIT = "for sd-scripts' DiT / flow-matching models (FLUX, SD3, Lumina, HunyuanImage, Anima), not SD1/SD2/SDXL"
# Options of those scripts (and of the kohya_ss GUI's pages for them), out of scope here: why.
OUT_OF_SCOPE = {
    "blocks_to_swap": f"swaps transformer blocks to the CPU, {_DIT}",
    "single_blocks_to_swap": f"swaps transformer blocks to the CPU, {_DIT}",
    "double_blocks_to_swap": f"swaps transformer blocks to the CPU, {_DIT}",
    "weighting_scheme": f"the flow-matching loss weighting (logit_normal, mode, ...), {_DIT}",
    "logit_mean": f"a parameter of weighting_scheme, {_DIT}",
    "logit_std": f"a parameter of weighting_scheme, {_DIT}",
    "mode_scale": f"a parameter of weighting_scheme, {_DIT}",
    "timestep_sampling": f"FLUX's timestep sampling (sigma, shift, flux_shift), {_DIT}",
    "discrete_flow_shift": f"the flow schedule's shift, {_DIT}",
    "model_prediction_type": f"the flow model's output (raw, additive, sigma_scaled), {_DIT}",
    "sigmoid_scale": f"a parameter of timestep_sampling, {_DIT}",
    "guidance_scale": f"FLUX-dev's distilled guidance, {_DIT}",
    "ggpo_sigma": f"GGPO (gradient-guided perturbation) in networks.lora_flux, {_DIT}",
    "ggpo_beta": f"GGPO (gradient-guided perturbation) in networks.lora_flux, {_DIT}",
    "t5xxl": f"the T5-XXL text encoder, {_DIT}",
    "t5xxl_max_token_length": f"the T5-XXL text encoder, {_DIT}",
    "apply_t5_attn_mask": f"the T5-XXL text encoder, {_DIT}",
    "clip_l": f"a separate CLIP-L file, {_DIT}",
    "clip_g": f"a separate CLIP-G file, {_DIT}",
    "ae": f"the FLUX autoencoder file, {_DIT}",
    "split_mode": f"FLUX's split training mode, {_DIT}",
    "train_blocks": f"FLUX's block selection, {_DIT}",
    "mem_eff_save": f"FLUX's memory-saving save, {_DIT}",
    "enable_scaled_pos_embed": f"SD3's position embedding, {_DIT}",
    "pos_emb_random_crop_rate": f"SD3's position embedding, {_DIT}",
    "flux1_checkbox": f"the kohya_ss GUI's FLUX switch, {_DIT}",
    "sd3_checkbox": f"the kohya_ss GUI's SD3 switch, {_DIT}",
}
