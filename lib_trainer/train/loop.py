"""The training loop: set-up, then one loop with labelled phases, then the final save.

Read `train()` top to bottom; the loss of one batch in step_loss.py, the diffusion math in noise.py, batches in
dataset/, files in checkpoints.py.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import torch

from ..config import TrainConfig
from ..dataset.latent_cache import LatentCache
from ..dataset.pixels import crop_box, size_condition
from ..dataset.plan import TrainingPlan, caption_options, make_plan
from ..dataset.captions import CaptionClock, training_caption
from ..dataset.dataset_config import example_caption_options, example_flip_aug
from ..dataset.masks import mask_source
from ..dataset.step_pictures import StepPictures
from ..errors import InvalidInput, UserError
from ..formats.metadata import training_metadata
from ..hosts.bundle import ModelBundle
from ..networks.embedding import embedding_prompts, embedding_run_config, is_embedding_run, refuse_existing
from ..networks.registry import create_trainable
from ..progress import Progress
from .base_weights import layer_dtype_for, requested_layer_dtype
from .checkpoints import CheckpointWriter, epoch_path, epoch_save_interval, final_path, step_path
from .ema import make_average
from .auto_precision import precision_notes, resolve_precision
from .first_step import FirstStepTimes
from .optimizers import eval_weights, fp16_eps_too_small, run_notes
from .output_guard import claimed_output
from .precision import (SAVE_DTYPES, autocast, check_fp8, check_precision, grad_scaler, resolve_device,
                        trainable_dtype)
from .resume import RunPosition, StateWriter, fingerprint, read_state, resume_notes, state_dir_for
from .sampling import SampleMaker
from . import noise as diffusion
from .run_parts import model_in_training, optimizer_and_schedule, optimizer_step, training_mode
from .schedulers import apply_learning_rates
from .step_loss import batch_loss, loss_option_notes, loss_option_refusals
from .text_cache import TextEncoderCache
from .validation import Validator
from .weight_norms import apply_max_norm


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite; nothing was saved from that point on."""


@dataclass
class TrainResult:
    final_path: str | None
    saved: list[str]
    steps: int
    stopped_early: bool
    losses: list[float] = field(default_factory=list)
    plan: TrainingPlan | None = None


def train(config: TrainConfig, bundle: ModelBundle | None = None, progress: Progress | None = None) -> TrainResult:
    progress = progress or Progress()
    times = FirstStepTimes()  # said in one line once the first step is done
    config.validate()
    if is_embedding_run(config):
        config = embedding_run_config(config)
        refuse_existing(config)
    saved_state = read_state(config.resume) if config.resume else None  # a bad folder fails before loading
    # --- set-up: seeds, model, plan, what is trained ---
    torch.manual_seed(config.seed)
    data_rng = random.Random(config.seed)
    noise_rng = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    for note in precision_notes(config.mixed_precision, device):
        progress.status(note)
    config = config.replace(mixed_precision=resolve_precision(config.mixed_precision, device))
    check_precision(device, config.mixed_precision)
    if config.fp8_base:
        check_fp8(device)
    if bundle is None:
        from ..hosts import load_bundle

        with times.part("load"):
            bundle = load_bundle(config.pretrained_model_name_or_path, config.v_parameterization, config.clip_skip,
                                 config.vae, layer_dtype=requested_layer_dtype(config))
    if config.v2 and bundle.family != "sd2":
        raise InvalidInput(f"v2 is set (an SD 2.x base model), but {config.pretrained_model_name_or_path or 'the model'} "
                           f"is {bundle.family.upper()} (its weights say so): remove v2, or choose an SD 2.x checkpoint")
    refused = loss_option_refusals(config, bundle.prediction_type)
    if refused:
        raise InvalidInput("; ".join(refused))
    for note in (*bundle.notes, *_family_notes(config, bundle), *loss_option_notes(config)):
        progress.status(note)
    plan = make_plan(config, bundle.count_tokens)
    progress.status(plan.summary())
    if config.fp8_base and not bundle.owns_weights:
        raise InvalidInput("fp8_base casts the base UNet to fp8 and back, which would change the WebUI's loaded "
                           "model: use it with a checkpoint this trainer loads itself")
    layer_dtype, notes = layer_dtype_for(config, bundle)  # base_weights_dtype
    for note in notes:
        progress.status(note)
    trainable = new_trainable(config, bundle, device)
    if config.network_weights:
        trainable.load_weights(config.network_weights)
        progress.status(f"started from the weights in {config.network_weights} (weights only: a new optimizer "
                        "and schedule)")
    progress.status(trained_parts_line(config, trainable))

    with claimed_output(config.output_dir, config.output_name, _expected_output_bytes(config, plan, trainable),
                        progress), \
            model_in_training(config, bundle, trainable, device, progress, times, layer_dtype):
        return _run(config, bundle, plan, trainable, device, progress, data_rng, noise_rng, saved_state, times)


def _run(config, bundle, plan, trainable, device, progress, data_rng, noise_rng, saved_state, times) -> TrainResult:
    trains_text = training_mode(config, bundle, trainable)
    with times.part("latents"):
        latents = _latent_source(config, bundle, plan, device, progress)
    captions, clock = caption_options(config, plan.total_steps), CaptionClock()
    with times.part("text encoder cache") if config.cache_text_encoder_outputs else contextlib.nullcontext():
        prompts = _prompt_source(config, bundle, plan, captions, trains_text, device, progress, clock)
    schedule = _noise_schedule(config, bundle, progress)
    if progress.stop_requested:  # stopped while caching: nothing trained, nothing to save
        progress.end("stopped before training")
        return TrainResult(None, [], 0, True, plan=plan)
    optimizer, optimizer_text, warmup, scheduler = optimizer_and_schedule(config, trainable, plan, device)
    for note in run_notes(config, [group.get("lr") for group in optimizer.param_groups]):
        progress.status(note)
    scaler = grad_scaler(device, config.mixed_precision, config.full_fp16)
    run = RunPosition.start(data_rng, noise_rng)
    checks = fingerprint(bundle.family, bundle.prediction_type, plan.training_set, trainable)
    ema = make_average(config, trainable)  # ema_decay: an average of the weights, saved beside them
    if saved_state is not None:
        run = _resume(config, saved_state, checks, trainable, optimizer, scheduler, scaler, data_rng, noise_rng,
                      progress)
        if ema is not None:
            ema.load_state_dict(saved_state.ema)
    metadata = training_metadata(config, plan.training_set, bundle.family, bundle.prediction_type,
                                 bundle.model_name, uuid.uuid4().hex, time.time(), plan.total_steps,
                                 optimizer_text, trainable.file_metadata(), warmup,
                                 model_hashes=(bundle.sd_model_hash, bundle.new_sd_model_hash),
                                 num_validation_images=len(plan.validation_examples))
    metadata["ss_trained_parts"] = json.dumps(trainable.conditioned())
    losses: list[float] = list(run.losses)
    window: deque[float] = deque(losses[-plan.steps_per_epoch:], maxlen=max(1, plan.steps_per_epoch))
    # Files, samples and validation get the weights to use: a schedule-free optimizer's average,
    # not its training point.
    weights = functools.partial(eval_weights, optimizer)
    validator = Validator(config, bundle, plan, trainable, latents, prompts, schedule, device, progress,
                          weights=weights)
    writer = CheckpointWriter(config, trainable, metadata, recent_losses=window, progress=progress, ema=ema,
                              validation_loss=lambda: validator.latest, weights=weights)
    states = StateWriter(config, trainable, optimizer, scheduler, scaler, checks, progress, ema=ema)
    samples = SampleMaker(config, bundle, trainable, device, progress, ema=ema, weights=weights)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    every_epochs = epoch_save_interval(config, plan.epochs)  # save_every_n_epochs, or save_n_epoch_ratio's
    step, stopped = run.step, False
    progress.start("training", plan.total_steps)
    try:
        if saved_state is None:
            samples.before_training()
        started, first_step = time.monotonic(), step  # after the first samples: it/s and ETA are about training
        times.step_started()
        for epoch in range(run.epoch, plan.epochs + 1):
            batches = run.epoch_batches(plan.training_set, epoch, data_rng, noise_rng)
            clock.epoch = epoch
            for index, batch in enumerate(batches):
                if index < run.skip:
                    continue  # trained before the run was resumed
                # --- loss of one batch (accumulated over gradient_accumulation_steps) ---
                clock.step = step
                with autocast(device, config.mixed_precision):
                    loss = batch_loss(config, bundle, batch, latents, prompts, schedule, device, data_rng,
                                      noise_rng)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(_diverged_message(loss, step, epoch, writer.saved, config))
                scaler.scale(loss / config.gradient_accumulation_steps).backward()
                window.append(loss.item())
                last_of_epoch = index == len(batches) - 1
                if (index + 1) % config.gradient_accumulation_steps and not last_of_epoch:
                    continue
                # --- optimizer step: unscale, clip, step; the schedule moves only on real steps ---
                optimizer_step(config, scaler, optimizer, scheduler, params)
                norms = apply_max_norm(trainable, config.scale_weight_norms)  # scale_weight_norms
                step += 1
                if ema is not None:
                    ema.after_step(step)
                losses.append(window[-1])
                run.after_step(step, epoch, index + 1, len(batches), losses, data_rng, noise_rng)
                # --- report ---
                _report(progress, step - first_step, step, epoch, plan.total_steps, window, optimizer, started, norms)
                times.step_done(progress)
                # --- samples, validation, save and stop checks ---
                samples.after_step(step)
                validator.after_step(step)
                if config.save_every_n_steps and step % config.save_every_n_steps == 0 and step < plan.total_steps:
                    states.saved_file(writer.save(step_path(config.output_dir, config.output_name, step), epoch, step),
                                  run, "step")
                    writer.prune("step", step, config.save_every_n_steps)
                if progress.commands.take_save_request():
                    states.saved_file(writer.save(step_path(config.output_dir, config.output_name, step), epoch, step),
                                  run, "step")
                if step >= plan.total_steps or progress.stop_requested:
                    stopped = progress.stop_requested and step < plan.total_steps
                    break
            # --- end of epoch: samples (after the last epoch too), then the epoch's file ---
            if index == len(batches) - 1:
                samples.after_epoch(epoch)
                validator.after_epoch(epoch, step)
            if stopped or step >= plan.total_steps:
                break
            if every_epochs and epoch % every_epochs == 0 and epoch < plan.epochs:
                states.saved_file(writer.save(epoch_path(config.output_dir, config.output_name, epoch), epoch, step),
                              run, "epoch")
                writer.prune("epoch", epoch, every_epochs)
    except TrainingDiverged:
        progress.end("training stopped: the loss diverged")
        raise
    except BaseException:
        # A crash or a hard interrupt: keep what was trained and its state, then let the error through.
        if step > run.resumed_at and trainable.all_finite():
            path = writer.save(step_path(config.output_dir, config.output_name, step), run.file_epoch, step,
                               interrupted=True)
            progress.saved(path)
            states.for_resume(path, run)
        progress.end("training failed")
        raise

    # --- final save ---
    if stopped:
        path = writer.save(step_path(config.output_dir, config.output_name, step), epoch, step, interrupted=True)
        progress.saved(path)
        states.for_resume(path, run)
    else:
        validator.at_end(step)
        path = writer.save(final_path(config.output_dir, config.output_name), epoch, step)
        progress.saved(path)
        if config.save_state or config.save_state_on_train_end:
            states.write(state_dir_for(path), run)
    progress.end(f"{'stopped early' if stopped else 'done'}: {path}")
    return TrainResult(path, writer.saved, step, stopped, losses, plan)


def new_trainable(config: TrainConfig, bundle: ModelBundle, device: torch.device):
    """What the run trains, on the device, in full_fp16/full_bf16's dtype when one is set."""
    trainable = create_trainable(config, bundle).to(device)
    if trainable_dtype(config.full_fp16, config.full_bf16) is not None:
        trainable.to(trainable_dtype(config.full_fp16, config.full_bf16))
    return trainable


def _resume(config, saved, checks, trainable, optimizer, scheduler, scaler, data_rng, noise_rng, progress):
    """Load a saved run state into this run's objects; returns where to go on from."""
    for note in resume_notes(saved, config, checks):
        progress.status(note)
    trainable.load_state_dict(saved.trainable)
    optimizer.load_state_dict(saved.optimizer)
    scheduler.load_state_dict(saved.scheduler)
    scaler.load_state_dict(saved.scaler)
    # A changed learning rate applies from here on, along the same schedule.
    lrs = {"unet": config.effective_unet_lr(), "text_encoder": config.effective_text_encoder_lr()}
    if not apply_learning_rates(scheduler, optimizer, lrs) and any(
            name in config.to_dict() and saved.config.get(name) != getattr(config, name)
            for name in ("learning_rate", "unet_lr", "text_encoder_lr")):
        progress.status("the learning rate changed, but this run's scheduler keeps the rates it saved")
    progress.status(f"resumed from {config.resume}: step {saved.step}, epoch {saved.epoch}, "
                    f"after {saved.batches_done} batches of it")
    return RunPosition.resumed(saved)


def _expected_output_bytes(config, plan, trainable) -> int:
    """What the run writes at most: its files, and the run states beside them (one at least,
    for a stop): the trained weights in the save precision, plus fp32 weights and two
    optimizer moments in a state (with EMA, twice the files and the average too)."""
    parameters = sum(p.numel() for p in trainable.parameters())
    every_epochs = epoch_save_interval(config, plan.epochs)
    files = 1 + (plan.epochs // every_epochs if every_epochs else 0) \
        + (plan.total_steps // config.save_every_n_steps if config.save_every_n_steps else 0)
    states = files if config.save_state else 1
    copies = 2 if config.ema_decay else 1  # ema_decay: an -ema file beside each, its fp32 average in each state
    return parameters * (copies * files * SAVE_DTYPES[config.save_precision].itemsize + states * (8 + copies * 4))


def _prompt_source(config, bundle, plan, captions, trains_text, device, progress, clock):
    """A function (batch, rng) -> conditioning of this step's captions: encoded each step
    (with gradients when text-encoder layers train), or from the text-encoder cache."""
    if config.cache_text_encoder_outputs:
        cache = TextEncoderCache(bundle, config.max_token_length)
        cache.fill((training_caption(e.caption, example_caption_options(captions, e), None)
                    for e in plan.cached_examples), progress)
        return lambda batch, rng: cache.get([training_caption(e.caption, example_caption_options(captions, e), None)
                                             for e in batch], device)

    rewrite = embedding_prompts(config) if is_embedding_run(config) else None
    encode = bundle.encode_prompts
    if config.weighted_captions:
        if not bundle.supports_weighted_captions:
            raise InvalidInput(f"weighted_captions: this model host ({type(bundle).__name__}) cannot read "
                               "emphasis weights; turn weighted_captions off")
        encode = bundle.encode_weighted_prompts

    def encode_each_step(batch, rng):
        prompts = [training_caption(example.caption, example_caption_options(captions, example), rng, clock.step,
                                    clock.epoch) for example in batch]
        if rewrite is not None:  # the embedding's name in its captions, or its template
            prompts = [rewrite(prompt, rng) for prompt in prompts]
        with contextlib.nullcontext() if trains_text else torch.no_grad():
            return encode(prompts, config.max_token_length)

    return encode_each_step


def _family_notes(config, bundle) -> list[str]:
    if bundle.family == "sd2" and config.clip_skip > 1:
        return [f"clip_skip={config.clip_skip} has no effect on SD2 models: the WebUI always conditions them on "
                "the penultimate OpenCLIP layer, and so does training"]
    return []


def _noise_schedule(config, bundle, progress) -> torch.Tensor:
    if not config.zero_terminal_snr:
        return bundle.alphas_cumprod
    if bundle.prediction_type == "epsilon":
        progress.status("zero_terminal_snr with an epsilon model: the last timestep has no signal left to "
                        "predict the noise from; it is meant for v-prediction (v_parameterization)")
    return diffusion.rescale_zero_terminal_snr(bundle.alphas_cumprod)


def _latent_source(config, bundle, plan, device, progress):
    """A function (batch, flips, rng) -> (latents, SDXL size conditioning, loss masks or None):
    from the cache, or encoded each step."""
    encode = _vae_encoder(bundle, device)
    masks = mask_source(config)
    if config.cache_latents:
        # Both orientations are cached when any subset flips.
        flips = any(example_flip_aug(config, e) for e in plan.training_set.examples)
        # highvram: keep CUDA's freed blocks cached between VAE batches (sd-scripts' meaning)
        release = torch.cuda.empty_cache if device.type == "cuda" and not config.highvram else None
        cache = LatentCache(encode, bundle.vae_fingerprint(), flips, config.cache_latents_to_disk,
                            config.latents_cache_dir, config.resize_interpolation, masks, config.vae_batch_size,
                            release)
        cache.fill(plan.cached_examples, progress)
        if cache.reused_from_disk:
            progress.status(f"reused {cache.reused_from_disk} cached latents from disk")

        def from_cache(batch, flips, rng):
            sizes = [size_condition(e.item.size, e.placement, crop_box(e.placement, False, None)) for e in batch]
            loss_masks = None if masks is None else torch.stack([cache.get_mask(e, f) for e, f in zip(batch, flips)])
            return torch.stack([cache.get(e, f) for e, f in zip(batch, flips)]), torch.tensor(sizes), loss_masks

        return from_cache

    pictures = StepPictures(config)

    def encode_each_step(batch, flips, rng):
        views = pictures.views(batch, rng)
        latents = encode(pictures.pixels(batch, views, flips, rng))
        return latents, pictures.sizes(batch, views), pictures.loss_masks(batch, views, flips, latents.shape[-2:])

    return encode_each_step


class VAEProducedNaN(UserError, RuntimeError):
    pass


def _vae_encoder(bundle, device):
    """pixels -> latents, outside the step's autocast: the VAE runs in its own dtype (fp32 unless
    the host holds it in half precision), since SD's VAE overflows in fp16. Non-finite latents
    are the VAE's fault, not the learning rate's, and are reported as such."""
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            latents = bundle.encode_pixels(pixels).float()
        if not torch.isfinite(latents).all():
            dtype = next(bundle.vae().parameters()).dtype
            raise VAEProducedNaN(f"the VAE produced NaN or infinite latents (it runs in {dtype}); use an fp32 VAE: "
                                 "a VAE file made for half precision (--vae), or --no-half-vae in the WebUI")
        return latents

    return encode


def _report(progress, steps_now, step, epoch, total, window, optimizer, started, extra=None) -> None:
    """steps_now: the steps of this session (not those before a resumption), for it/s; extra:
    more of the step's info (scale_weight_norms')."""
    elapsed = time.monotonic() - started
    rate = steps_now / elapsed if elapsed > 0 else 0.0
    # Each part's lr on the schedule (a block's or LoRA+ group has it times its factor).
    lrs = {}
    for group in optimizer.param_groups:
        lrs.setdefault(group.get("name"), group["lr"] / group.get("lr_factor", 1.0))
    info = {"epoch": epoch, "loss": window[-1], "avg_loss": sum(window) / len(window),
            "lr": lrs.get("unet", lrs.get("text_encoder", next(iter(lrs.values())))), "it_per_s": rate,
            "eta_s": (total - step) / rate if rate else math.inf}
    if "text_encoder" in lrs:
        info["lr_te"] = lrs["text_encoder"]
    progress.step(step, **info, **(extra or {}))


def _diverged_message(loss, step, epoch, saved, config) -> str:
    """What went wrong and what to try, for this run's own settings."""
    last = f"The last good file is {saved[-1]}." if saved else "No file was written."
    advice = ["lower the learning rate"]
    if config.mixed_precision == "fp16":
        advice.append("use mixed_precision=bf16 (or no) instead of fp16")
    if config.full_fp16 and fp16_eps_too_small(config):
        advice.append("set optimizer_args eps=1e-4 (fp16 rounds Adam's 1e-8 to 0) or use full_bf16")
    if not config.max_grad_norm:
        advice.append("set max_grad_norm=1")
    return (f"The loss became {loss.item()} at step {step + 1} (epoch {epoch}); training stopped. {last} "
            f"Try: {'; '.join(advice)}.")


def trained_parts_line(config: TrainConfig, trainable) -> str:
    """What this run trains, said before step 1 (users of other trainers often learned late that
    their text encoder was not trained): 'UNet ✔ (192 layers) · text encoder ✘ (why)'."""
    counts = trainable.conditioned()
    why_not = {"unet": "network_train_text_encoder_only" if config.network_train_text_encoder_only
               else "no layer adapted",
               "text_encoder": "network_train_unet_only" if config.network_train_unet_only
               else "text_encoder_lr=0" if config.effective_text_encoder_lr() == 0 else "no layer adapted"}
    names = {"unet": "UNet", "text_encoder": "text encoder", "token_embeddings": "token embeddings"}
    parts = []
    for part in ("unet", "text_encoder", *[p for p in counts if p not in ("unet", "text_encoder")]):
        if counts.get(part):
            unit = "vectors" if part == "token_embeddings" else "layers"
            parts.append(f"{names.get(part, part)} ✔ ({counts[part]} {unit})")
        elif part in why_not:
            parts.append(f"{names[part]} ✘ ({why_not[part]})")
    parameters = sum(p.numel() for p in trainable.parameters())
    return f"Trains ({trainable.kind}, {parameters:,} parameters): " + " · ".join(parts)
