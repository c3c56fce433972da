"""BLIP captions without the WebUI, from a local transformers folder (no download here).

A folder saved from Salesforce/blip-image-captioning-base (or -large) with
`save_pretrained` holds what is needed; the WebUI itself uses its own BLIP (webui/taggers.py).
"""
from __future__ import annotations

import os


class LocalBlip:
    def __init__(self, model_path: str | None, use_gpu: bool = True, max_new_tokens: int = 40):
        if not model_path or not os.path.isdir(model_path):
            raise FileNotFoundError(
                "BLIP outside the WebUI needs a local model folder: download "
                "Salesforce/blip-image-captioning-base from Hugging Face (config.json, "
                f"model.safetensors, preprocessor and tokenizer files) and pass it as --model-path (got {model_path!r})")
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.processor = BlipProcessor.from_pretrained(model_path, local_files_only=True)
        self.model = BlipForConditionalGeneration.from_pretrained(model_path, local_files_only=True).to(self.device).eval()
        self.max_new_tokens = max_new_tokens

    def tag(self, images):
        import torch

        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt").to(self.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, num_beams=3, max_new_tokens=self.max_new_tokens)
        captions = self.processor.batch_decode(output, skip_special_tokens=True)
        return [[(caption.strip(), 1.0)] for caption in captions]
