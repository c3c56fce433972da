"""The `ss_*` metadata kohya writes into a LoRA file, which the WebUI's Lora cards, AddNet
and civitai read (training parameters, dataset folders, tag frequencies, buckets), plus
the SAI `modelspec.*` keys. All values are strings; structured ones are JSON."""
from __future__ import annotations

import json
import math
import os
from collections import Counter

from ..config import TrainConfig
from ..dataset.caption_image_checks import parse_face_crop_range
from ..dataset.captions import split_tags
from ..dataset.training_set import TrainingSet, steps_per_epoch

# Ours, not kohya's: the mean loss over the last epoch's steps when the file was saved.
AVERAGE_LOSS_KEY = "lib_trainer_average_loss"
# The newest validation loss when the file was saved (train/validation.py); sd-scripts logs it only.
VALIDATION_LOSS_KEY = "ss_validation_loss"
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURES = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sd2_v": "stable-diffusion-v2-768-v",
                 "sdxl": "stable-diffusion-xl-v1-base"}


def training_metadata(config: TrainConfig, training_set: TrainingSet, family: str, prediction_type: str,
                      model_name: str, session_id: str, started_at: float, total_steps: int,
                      optimizer_description: str, network_metadata: dict[str, str], warmup_steps: int,
                      model_hashes: tuple[str, str] = ("", ""), num_validation_images: int = 0) -> dict[str, str]:
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
        "ss_num_validation_images": num_validation_images,
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
        "ss_noise_offset_random_strength": config.noise_offset_random_strength,
        "ss_adaptive_noise_scale": config.adaptive_noise_scale,
        "ss_multires_noise_iterations": config.multires_noise_iterations,
        "ss_multires_noise_discount": config.multires_noise_discount,
        "ss_ip_noise_gamma": config.ip_noise_gamma,
        "ss_ip_noise_gamma_random_strength": config.ip_noise_gamma_random_strength,
        "ss_debiased_estimation": config.debiased_estimation_loss,
        "ss_loss_type": config.loss_type,
        "ss_huber_schedule": config.huber_schedule,
        "ss_huber_scale": config.huber_scale,
        "ss_huber_c": config.huber_c,
        # Not written by sd-scripts: the timestep range changes what a LoRA learns, so it is kept too.
        "ss_min_timestep": config.min_timestep,
        "ss_max_timestep": config.max_timestep,
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
        "ss_color_aug": config.color_aug,
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
        # sd-scripts writes its validation options as given: None when not set (0 here).
        "ss_validation_seed": config.validation_seed,
        "ss_validation_split": config.validation_split,
        "ss_max_validation_steps": config.max_validation_steps or None,
        "ss_validate_every_n_epochs": config.validate_every_n_epochs or None,
        "ss_validate_every_n_steps": config.validate_every_n_steps or None,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{modelspec_architecture(family, prediction_type)}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl"
        else "diffusers",
        "modelspec.title": config.metadata_title or config.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
        **user_modelspec(config),
    }
    meta.update(network_args_metadata(config))
    if training_set.scan.datasets:
        meta["ss_datasets"] = json.dumps(datasets_metadata(training_set))
    meta.update(caption_image_metadata(config))
    meta.update(optimizer_metadata(config))
    if config.base_weights_dtype:  # how the base model was held (fp16 exact, bf16 rounded), when not as usual
        meta["ss_base_weights_dtype"] = config.base_weights_dtype
    for key, value in zip(("ss_sd_model_hash", "ss_new_sd_model_hash"), model_hashes):
        if value:
            meta[key] = value
    return {key: _text(value) for key, value in meta.items()}


def network_args_metadata(config: TrainConfig) -> dict:
    """ss_scale_weight_norms as kohya writes it (None when off), and the LoRA+ ratios given as
    config fields (kohya users give them as network_args, which ss_network_args records)."""
    meta = {"ss_scale_weight_norms": config.scale_weight_norms}
    for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        if getattr(config, key) is not None:
            meta[f"ss_{key}"] = getattr(config, key)
    return meta


# What kohya's --no_metadata keeps of the ss_* keys (train_util.SS_METADATA_MINIMUM_KEYS): enough
# for a loader to tell the model family and the network's shape.
MINIMUM_KEYS = ("ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                "ss_network_args")
# metadata_<name> options -> the modelspec key sd-scripts writes them to (sai_model_spec.py).
USER_MODELSPEC = ("author", "description", "license", "tags")


def user_modelspec(config: TrainConfig) -> dict[str, str]:
    """modelspec.author/description/license/tags, only where given (as sd-scripts leaves None out)."""
    return {f"modelspec.{name}": getattr(config, f"metadata_{name}") for name in USER_MODELSPEC
            if getattr(config, f"metadata_{name}")}


def minimum_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """The file's metadata under no_metadata: kohya's minimum keys and the modelspec.* keys."""
    return {key: value for key, value in metadata.items() if key in MINIMUM_KEYS or key.startswith("modelspec.")}


def datasets_metadata(training_set: TrainingSet) -> list[dict]:
    """sd-scripts' ss_datasets for a dataset config: each dataset's batch size, resolution, buckets,
    image counts and subsets."""
    datasets = []
    for index, spec in enumerate(training_set.scan.datasets):
        own = [e for e in training_set.epoch_examples if e.item.concept.dataset == index]
        subsets = []
        for concept in (c for c in training_set.scan.concepts if c.dataset == index):
            subset = concept.subset
            captions = dict(subset.captions)
            subsets.append({
                "img_count": sum(1 for item in training_set.scan.items if item.concept is concept),
                "num_repeats": subset.num_repeats, "flip_aug": subset.flip_aug, "random_crop": subset.random_crop,
                "shuffle_caption": captions.get("shuffle_caption"), "keep_tokens": captions.get("keep_tokens"),
                "image_dir": _folder_name(subset.image_dir), "class_tokens": subset.class_tokens,
                "is_reg": subset.is_reg})
        buckets = training_set.bucket_counts(index)
        datasets.append({
            "is_dreambooth": True, "batch_size_per_device": spec.batch_size,
            "num_train_images": sum(1 for e in own if not e.item.concept.is_reg),
            "num_reg_images": sum(e.item.concept.repeats for e in training_set.examples
                                  if e.item.concept.dataset == index and e.item.concept.is_reg),
            "resolution": list(spec.buckets.resolution), "enable_bucket": spec.buckets.enable_bucket,
            "min_bucket_reso": spec.buckets.min_bucket_reso, "max_bucket_reso": spec.buckets.max_bucket_reso,
            "bucket_info": {"buckets": {str(i): {"resolution": list(b), "count": n}
                                        for i, (b, n) in enumerate(buckets.items())}},
            "subsets": subsets})
    return datasets


def caption_image_metadata(config: TrainConfig) -> dict:
    """The caption, augmentation and mask options, as sd-scripts writes them: unset ones as
    None (a face range as its tuple); the separators, prefix and suffix, which kohya keeps in
    ss_datasets, and the masks, at the top level too, so every run shows them."""
    return {
        "ss_caption_dropout_every_n_epochs": config.caption_dropout_every_n_epochs,
        "ss_face_crop_aug_range": parse_face_crop_range(config.face_crop_aug_range),
        "ss_resize_interpolation": config.resize_interpolation or None,
        "ss_keep_tokens_separator": config.keep_tokens_separator,
        "ss_secondary_separator": config.secondary_separator or None,
        "ss_enable_wildcard": config.enable_wildcard,
        "ss_caption_prefix": config.caption_prefix or None,
        "ss_caption_suffix": config.caption_suffix or None,
        "ss_token_warmup_min": config.token_warmup_min,
        "ss_token_warmup_step": config.token_warmup_step,
        "ss_weighted_captions": config.weighted_captions,
        "ss_masked_loss": config.masked_loss,
        "ss_alpha_mask": config.alpha_mask,
    }


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
        # A caption of several lines (enable_wildcard trains one of them) counts each line's tags.
        counter.update(set(split_tags(example.caption.replace("\n", separator), separator)))
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
