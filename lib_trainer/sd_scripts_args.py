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


OUT_OF_SCOPE_WHY = ("options of sd-scripts' DiT / flow-matching scripts (FLUX, SD3, Lumina, HunyuanImage, Anima), "
                    "which train other model families than SD1, SD2 and SDXL")
# Those options (and the kohya_ss GUI's switches for them), out of scope here: what each does.
OUT_OF_SCOPE = {
    "blocks_to_swap": "swaps transformer blocks to the CPU",
    "single_blocks_to_swap": "swaps transformer blocks to the CPU",
    "double_blocks_to_swap": "swaps transformer blocks to the CPU",
    "weighting_scheme": "the flow-matching loss weighting (logit_normal, mode, ...)",
    "logit_mean": "a parameter of weighting_scheme",
    "logit_std": "a parameter of weighting_scheme",
    "mode_scale": "a parameter of weighting_scheme",
    "timestep_sampling": "FLUX's timestep sampling (sigma, shift, flux_shift)",
    "discrete_flow_shift": "the flow schedule's shift",
    "model_prediction_type": "the flow model's output (raw, additive, sigma_scaled)",
    "sigmoid_scale": "a parameter of timestep_sampling",
    "guidance_scale": "FLUX-dev's distilled guidance",
    "ggpo_sigma": "GGPO (gradient-guided perturbation) in networks.lora_flux",
    "ggpo_beta": "GGPO (gradient-guided perturbation) in networks.lora_flux",
    "train_lora_ggpo": "the kohya_ss GUI's GGPO switch (FLUX LoRA)",
    "t5xxl": "the T5-XXL text encoder",
    "t5xxl_max_token_length": "the T5-XXL text encoder",
    "apply_t5_attn_mask": "the T5-XXL text encoder",
    "clip_l": "a separate CLIP-L file",
    "clip_g": "a separate CLIP-G file",
    "ae": "the FLUX autoencoder file",
    "split_mode": "FLUX's split training mode",
    "train_blocks": "FLUX's block selection",
    "mem_eff_save": "FLUX's memory-saving save",
    "enable_scaled_pos_embed": "SD3's position embedding",
    "pos_emb_random_crop_rate": "SD3's position embedding",
    "flux1_checkbox": "the kohya_ss GUI's FLUX switch",
    "sd3_checkbox": "the kohya_ss GUI's SD3 switch",
}
