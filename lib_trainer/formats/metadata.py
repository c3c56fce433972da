"""The `ss_*` metadata kohya writes into a LoRA file, which the WebUI's Lora cards, AddNet
and civitai read (training parameters, dataset folders, tag frequencies, buckets), plus
the SAI `modelspec.*` keys. All values are strings; structured ones are JSON."""
from __future__ import annotations

import json
import math
import os
from collections import Counter

from ..config import TrainConfig
from ..dataset.captions import split_tags
from ..dataset.training_set import TrainingSet, steps_per_epoch

# Ours, not kohya's: the mean loss over the last epoch's steps when the file was saved.
AVERAGE_LOSS_KEY = "lib_trainer_average_loss"
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURES = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sd2_v": "stable-diffusion-v2-768-v",
                 "sdxl": "stable-diffusion-xl-v1-base"}


def training_metadata(config: TrainConfig, training_set: TrainingSet, family: str, prediction_type: str,
                      model_name: str, session_id: str, started_at: float, total_steps: int,
                      optimizer_description: str, network_metadata: dict[str, str], warmup_steps: int,
                      model_hashes: tuple[str, str] = ("", "")) -> dict[str, str]:
    """The metadata fixed for the whole run; `checkpoint_metadata` adds the per-save keys.
    `network_metadata`: the trainable's own ss_network_* keys. `model_hashes`: the base
    model's legacy and sha256 hashes, left out when unknown (as kohya leaves them out for a
    model that is not a file)."""
    width, height = config.resolution_wh()
    meta = {
        "ss_session_id": session_id,
        "ss_training_started_at": started_at,
        "ss_output_name": config.output_name,
        "ss_learning_rate": config.learning_rate,
        "ss_text_encoder_lr": config.effective_text_encoder_lr(),
        "ss_unet_lr": config.effective_unet_lr(),
        # The counts as kohya writes them: what the run resolved to, not the options given.
        "ss_num_train_images": training_set.num_train_images,
        "ss_num_reg_images": training_set.reg_images_with_repeats,
        "ss_num_batches_per_epoch": training_set.batches_per_epoch(),
        "ss_num_epochs": math.ceil(total_steps / steps_per_epoch(training_set.batches_per_epoch(),
                                                                 config.gradient_accumulation_steps)),
        "ss_gradient_checkpointing": config.gradient_checkpointing,
        "ss_gradient_accumulation_steps": config.gradient_accumulation_steps,
        "ss_max_train_steps": total_steps,
        "ss_lr_warmup_steps": warmup_steps,
        "ss_lr_scheduler": config.lr_scheduler,
        **network_metadata,
        "ss_mixed_precision": config.mixed_precision,
        "ss_full_fp16": config.full_fp16,
        "ss_v2": family == "sd2",
        "ss_v_parameterization": prediction_type == "v_prediction",
        "ss_base_model_version": base_model_version(family, prediction_type),
        "ss_clip_skip": config.clip_skip,
        "ss_max_token_length": config.max_token_length,
        "ss_cache_latents": config.cache_latents,
        "ss_seed": config.seed,
        "ss_noise_offset": config.noise_offset,
        "ss_min_snr_gamma": config.min_snr_gamma,
        "ss_zero_terminal_snr": config.zero_terminal_snr,
        "ss_max_grad_norm": config.max_grad_norm,
        "ss_optimizer": optimizer_description,
        "ss_caption_dropout_rate": config.caption_dropout_rate,
        "ss_caption_tag_dropout_rate": config.caption_tag_dropout_rate,
        "ss_prior_loss_weight": config.prior_loss_weight,
        "ss_training_comment": config.training_comment,
        "ss_sd_model_name": model_name,
        "ss_batch_size_per_device": config.train_batch_size,
        "ss_total_batch_size": config.train_batch_size * config.gradient_accumulation_steps,
        "ss_resolution": f"({width}, {height})",
        "ss_flip_aug": config.flip_aug,
        "ss_random_crop": config.random_crop,
        "ss_color_aug": False,
        "ss_shuffle_caption": config.shuffle_caption,
        "ss_keep_tokens": config.keep_tokens,
        "ss_enable_bucket": config.enable_bucket,
        "ss_bucket_no_upscale": config.bucket_no_upscale,
        "ss_min_bucket_reso": config.min_bucket_reso,
        "ss_max_bucket_reso": config.max_bucket_reso,
        "ss_dataset_dirs": json.dumps(dataset_dirs(training_set, is_reg=False)),
        "ss_reg_dataset_dirs": json.dumps(dataset_dirs(training_set, is_reg=True)),
        "ss_tag_frequency": json.dumps(tag_frequency(training_set, config.caption_separator)),
        "ss_bucket_info": json.dumps(bucket_info(training_set)),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{modelspec_architecture(family, prediction_type)}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl"
        else "diffusers",
        "modelspec.title": config.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
    }
    meta.update(optimizer_metadata(config))
    for key, value in zip(("ss_sd_model_hash", "ss_new_sd_model_hash"), model_hashes):
        if value:
            meta[key] = value
    return {key: _text(value) for key, value in meta.items()}


def optimizer_metadata(config: TrainConfig) -> dict:
    """Schedule and precision keys (issue 14). ss_lr_scheduler as sd-scripts records it: with
    Adafactor's relative step it is `adafactor:<initial lr>`. ss_full_bf16 and ss_vae_batch_size
    are written by the same rule as kohya's ss_full_fp16."""
    from ..train.optimizers import uses_relative_step  # no torch

    scheduler = config.lr_scheduler
    if not config.lr_scheduler_type and uses_relative_step(config.optimizer_type, config.parsed_optimizer_args()):
        scheduler = f"adafactor:{config.learning_rate}"
    return {"ss_lr_scheduler": scheduler, "ss_full_bf16": config.full_bf16, "ss_fp8_base": config.fp8_base,
            "ss_lowram": config.lowram, "ss_vae_batch_size": config.vae_batch_size}


def base_model_version(family: str, prediction_type: str) -> str:
    """kohya's names: sd_v1, sd_v2, with _v for v-prediction; sdxl_base_v1-0."""
    if family == "sdxl":
        return BASE_MODEL_VERSIONS[family]
    return BASE_MODEL_VERSIONS[family] + ("_v" if prediction_type == "v_prediction" else "")


def modelspec_architecture(family: str, prediction_type: str) -> str:
    if family == "sd2" and prediction_type == "v_prediction":
        return ARCHITECTURES["sd2_v"]
    return ARCHITECTURES[family]


def checkpoint_metadata(base: dict[str, str], epoch: int, step: int, finished_at: float,
                        interrupted: bool = False) -> dict[str, str]:
    meta = dict(base)
    meta.update(ss_epoch=str(epoch), ss_steps=str(step), ss_training_finished_at=str(finished_at))
    if interrupted:
        meta["ss_training_comment"] = (meta.get("ss_training_comment", "") + " [stopped early]").strip()
    return meta


def dataset_dirs(training_set: TrainingSet, is_reg: bool) -> dict:
    folders: dict[str, dict] = {}
    for item in training_set.scan.items:
        if item.concept.is_reg != is_reg:
            continue
        entry = folders.setdefault(_folder_name(item.concept.folder), {"n_repeats": item.concept.repeats,
                                                                        "img_count": 0})
        entry["img_count"] += 1
    return folders


def tag_frequency(training_set: TrainingSet, separator: str) -> dict:
    """Per folder, how many images carry each tag (as the WebUI's Lora card shows)."""
    frequency: dict[str, Counter] = {}
    for example in training_set.examples:
        if example.item.concept.is_reg:
            continue
        counter = frequency.setdefault(_folder_name(example.item.concept.folder), Counter())
        counter.update(set(split_tags(example.caption, separator)))
    return {folder: dict(counter) for folder, counter in frequency.items()}


def bucket_info(training_set: TrainingSet) -> dict:
    buckets = {
        str(index): {"resolution": list(bucket), "count": count}
        for index, (bucket, count) in enumerate(training_set.bucket_counts().items())
    }
    errors = [abs(e.item.size[0] / e.item.size[1] - e.placement.bucket[0] / e.placement.bucket[1])
              for e in training_set.examples]
    return {"buckets": buckets, "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0}


def _folder_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


def _text(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)
