"""The training config: one typed object, with kohya's parameter names.

Everything else is derived from `TrainConfig`: the CLI flags (`cli_args.py`), the saved
config file, the `ss_*` metadata and (later) the UI form. A new option is one new field
here, with its help text, its UI group and, where the value is constrained, its choices or
range. Unknown keys and bad values are reported, never silently ignored.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UserError

CONFIG_VERSION = 1


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message lists every problem and how to fix it."""


def option(default, help: str, group: str, choices=None, minimum=None, maximum=None, **extra):
    """A config field with the metadata the CLI, the UI and validation read."""
    metadata = {"help": help, "group": group, "choices": choices, "min": minimum, "max": maximum, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# sd-scripts' optimizer_type names (train/optimizers.py has their packages); a dotted
# module.Class path of an installed package is accepted too, as in sd-scripts.
OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Prodigy", "Adafactor", "SGDNesterov", "Lion8bit", "PagedAdamW8bit",
              "PagedAdamW", "PagedAdamW32bit", "PagedLion8bit", "SGDNesterov8bit", "DAdaptation",
              "DAdaptAdamPreprint", "DAdaptAdaGrad", "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion",
              "DAdaptSGD", "RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant", "inverse_sqrt", "adafactor")
PRECISIONS = ("auto", "no", "fp16", "bf16")
SAVE_PRECISIONS = ("fp16", "bf16", "float")
BASE_WEIGHTS_DTYPES = ("", "fp16", "bf16")
# sd-scripts' sample_sampler names, so its configs load; which of them can really sample
# is checked when sampling is on (train/samplers.py lists them).
KOHYA_SAMPLERS = ("ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
                  "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a")
# kohya's loss functions and Huber schedules (train/losses.py computes them)
LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_LOSSES = ("huber", "smooth_l1")  # the two that take a threshold huber_c
HUBER_SCHEDULES = ("constant", "exponential", "snr")

# The WebUI's hypernetwork activations (modules/hypernetworks: its own names, then every torch
# activation class by its lower-case name), as its Create tab offers them, less the ones that
# cannot work there: threshold needs arguments and glu halves the features.
HYPERNETWORK_ACTIVATIONS = (
    "linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "celu", "gelu", "hardshrink", "hardsigmoid",
    "hardtanh", "logsigmoid", "logsoftmax", "mish", "prelu", "relu6", "rrelu", "selu", "silu", "softmax", "softmax2d",
    "softmin", "softplus", "softshrink", "softsign", "tanhshrink")
# kohya's resize_interpolation names (library/utils.py); linear and cubic are other names of bilinear
# and bicubic, box is area. Empty: kohya's default.
RESIZE_INTERPOLATIONS = ("", "lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area", "box")
HYPERNETWORK_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")


@dataclass
class TrainConfig:
    # --- model ---
    pretrained_model_name_or_path: str = option(
        "tiny:sd1", "Base model: a .safetensors/.ckpt checkpoint (SD1.x, SD2.x, SDXL), a diffusers folder, "
        "or tiny:sd1 / tiny:sd2 / tiny:sdxl (built-in test models).", "model")
    vae: str = option("", "A separate VAE file that replaces the checkpoint's own.", "model")
    v2: bool = option(False, "sd-scripts' flag for an SD 2.x base model. The family is read from the checkpoint "
                      "itself; when set, it must agree.", "model",
                      differs="the family is read from the checkpoint; v2 only has to agree with it")
    v_parameterization: bool = option(False, "The model predicts v instead of noise (SD2.x 768-v models; detected "
                                      "from a .yaml beside the checkpoint or a v_pred key).", "model")
    zero_terminal_snr: bool = option(False, "Rescale the noise schedule to zero SNR at the last step "
                                     "(for v-prediction models trained that way).", "model")
    clip_skip: int = option(1, "Use the output of the N-th last text-encoder layer (2 for most anime models), as "
                            "the WebUI applies it: SD1 only; SD2 always uses the penultimate layer; SDXL's CLIP-L "
                            "takes it like the WebUI's 'SDXL CLIP-L skip' option when 2 or more.",
                            "model", minimum=1, maximum=12,
                            differs="applied as the WebUI applies it (SD2 always penultimate; SDXL's CLIP-L only)")
    device: str = option("auto", "Where to train: auto (cuda if present), cuda, cuda:1, cpu.", "model")

    # --- dataset ---
    train_data_dir: str = option("", "Folder holding <repeats>_<concept> folders of images and captions.", "dataset")
    reg_data_dir: str = option("", "Optional folder of <repeats>_<class> regularisation folders.", "dataset")
    caption_extension: str = option(".txt", "Extension of caption files next to the images.", "dataset")
    trigger_word: str = option("", "Word(s) put first in every caption, kept first when shuffling (your concept's token).", "dataset")
    shuffle_caption: bool = option(False, "Shuffle comma-separated tags each step.", "dataset")
    keep_tokens: int = option(0, "Number of leading tags that stay in place when shuffling.", "dataset", minimum=0)
    caption_separator: str = option(",", "Separator between tags.", "dataset")
    caption_dropout_rate: float = option(0.0, "Probability of training an image with an empty caption.",
                                         "dataset", minimum=0.0, maximum=1.0)
    caption_tag_dropout_rate: float = option(0.0, "Probability of dropping each (non-kept) tag.",
                                             "dataset", minimum=0.0, maximum=1.0)
    max_token_length: int = option(75, "Caption tokens used: 75, 150 or 225 (chunked like the WebUI).",
                                   "dataset", choices=(75, 150, 225),
                                   differs="75 is a value here (kohya: not set); long captions are chunked as "
                                   "the WebUI chunks prompts")
    resolution: str = option("512", "Training resolution: 512 or 512,768 (width,height).", "dataset")
    enable_bucket: bool = option(True, "Aspect-ratio bucketing instead of square crops.", "dataset")
    min_bucket_reso: int = option(256, "Smallest bucket side in pixels.", "dataset", minimum=64)
    max_bucket_reso: int = option(1024, "Largest bucket side in pixels.", "dataset", minimum=64)
    bucket_reso_steps: int = option(64, "Bucket sides are multiples of this.", "dataset", minimum=8)
    bucket_no_upscale: bool = option(False, "Never upscale images to fill a bucket.", "dataset")
    random_crop: bool = option(False, "Random instead of centre crop to the bucket.", "dataset")
    flip_aug: bool = option(False, "Randomly mirror images horizontally.", "dataset")
    # --- captions, augmentation and loss masks (issue 14) ---
    keep_tokens_separator: str = option(
        "", "A separator written in captions (e.g. |||): the tags before it stay in place when shuffling, "
        "instead of the first keep_tokens; the tags after a second one stay in place at the end.", "dataset",
        differs="the separator is taken out of the caption even when nothing shuffles (kohya then trains it as text)")
    secondary_separator: str = option(
        "", "A separator inside a tag (e.g. ;;;): the tags it joins shuffle and drop as one, and it becomes "
        "caption_separator after that.", "dataset")
    enable_wildcard: bool = option(
        False, "Captions may hold {a|b|c}: one choice is drawn each step; a caption file of several lines "
        "trains one line, drawn each step ({{ and }} are plain braces).", "dataset")
    caption_prefix: str = option("", "Text put before every caption (with a space).", "dataset")
    caption_suffix: str = option("", "Text put after every caption (with a space).", "dataset")
    caption_dropout_every_n_epochs: int = option(
        0, "Train every N-th epoch with all captions empty (0 = never).", "dataset", minimum=0)
    token_warmup_min: int = option(
        1, "Token warm-up: the tags trained at step 0 (the first ones after the kept ones).", "dataset", minimum=0)
    token_warmup_step: float = option(
        0.0, "Token warm-up: the step at which captions reach all their tags, growing evenly from "
        "token_warmup_min (below 1: a fraction of all steps; 0 = off).", "dataset", minimum=0.0)
    weighted_captions: bool = option(
        False, "Read (word:1.2), (word) and [word] in captions as emphasis weights on the text encoder's output, "
        "as the WebUI reads prompts. Keep commas out of the brackets when shuffling or dropping tags.", "dataset")
    color_aug: bool = option(
        False, "Weak colour augmentation: a third of the steps shift the hue a little or apply a slight gamma "
        "(needs cache_latents off).", "dataset",
        differs="the gamma is applied to 0..1 values, as the albumentations transform kohya's code replaced did")
    face_crop_aug_range: str = option(
        "", "Face-centred crop, e.g. 2.0,4.0: the face is scaled to 1/4..1/2 of the side and the crop centred on "
        "it; the face's position is read from the file name (name_cx_cy_w_h.png). Needs enable_bucket and "
        "cache_latents off, as in kohya.", "dataset")
    resize_interpolation: str = option(
        "", "How pictures are resized to their bucket (empty: area when shrinking, lanczos when enlarging).",
        "dataset", choices=RESIZE_INTERPOLATIONS)
    alpha_mask: bool = option(
        False, "Use each picture's transparency as a loss mask: transparent areas do not train.", "dataset")
    masked_loss: bool = option(
        False, "Weight the loss by a mask image per picture from conditioning_data_dir (its red channel: "
        "white trains, black is ignored).", "dataset")
    conditioning_data_dir: str = option(
        "", "Folder of mask images named like the training images (a.png -> a.png/a.jpg...), directly in it or "
        "in a subfolder named like the image's <repeats>_<concept> folder.", "dataset")
    cache_latents: bool = option(True, "Encode every image once with the VAE and keep the latents in memory.",
                                 "dataset")
    cache_latents_to_disk: bool = option(False, "Also keep the latents on disk and reuse them in later runs.",
                                         "dataset")
    latents_cache_dir: str = option("", "Folder for the disk latent cache (empty: next to the images).", "dataset")
    cache_text_encoder_outputs: bool = option(
        False, "Encode every caption once before training (needs the text encoders frozen, fixed captions).",
        "dataset")
    prior_loss_weight: float = option(1.0, "Loss weight of regularisation images.", "dataset", minimum=0.0)
    # --- dataset config (issue 14) ---
    dataset_config: str = option(
        "", "A .toml dataset config in sd-scripts' layout ([general], [[datasets]], [[datasets.subsets]] with "
        "image_dir, num_repeats, is_reg, class_tokens, ...): several datasets, each with its own resolution, "
        "buckets and batch size. When set, train_data_dir and reg_data_dir are ignored, as in sd-scripts.",
        "dataset", differs="fine-tuning (metadata_file) and ControlNet subsets are refused; a relative image_dir is "
        "also looked for beside the dataset config; validation_split and validation_seed may be set per subset")

    # --- network ---
    network_module: str = option("networks.lora", "Network method (networks.lora: LoRA, LoCon with conv_dim; "
                                 "lycoris.kohya with network_args algo=loha/lokr/ia3/locon/full: LyCORIS).",
                                 "network")
    network_dim: int = option(16, "LoRA rank of linear layers.", "network", minimum=1)
    network_alpha: float = option(8.0, "LoRA alpha; the update is scaled by alpha / dim.", "network", minimum=0.0)
    conv_dim: int = option(0, "Rank of LoRA on 3x3 convolutions (LoCon); 0 = none.", "network", minimum=0)
    conv_alpha: float = option(1.0, "Alpha of the convolution LoRA.", "network", minimum=0.0)
    network_dropout: float = option(0.0, "Dropout of the LoRA's hidden features.", "network", minimum=0.0, maximum=1.0)
    rank_dropout: float = option(0.0, "Probability of dropping each rank per step.", "network", minimum=0.0,
                                 maximum=1.0)
    module_dropout: float = option(0.0, "Probability of skipping a whole LoRA layer per step.", "network",
                                   minimum=0.0, maximum=1.0)
    network_args: list = option([], "Extra key=value network arguments, as kohya's --network_args.", "network")
    network_weights: str = option("", "Start from the weights of an existing LoRA file (weights only: a new "
                                  "optimizer and schedule; to continue a stopped run use resume).", "network")
    network_train_unet_only: bool = option(False, "Train only the UNet LoRA.", "network")
    network_train_text_encoder_only: bool = option(False, "Train only the text-encoder LoRA.", "network")
    # --- network arguments (issue 14) ---
    loraplus_lr_ratio: float | None = option(
        None, "LoRA+: the up weights learn this many times faster than the down weights (the paper suggests 16; "
        "empty = off). networks.lora only.", "network", minimum=0.0,
        differs="sd-scripts takes it only as --network_args loraplus_lr_ratio=16; that works here too")
    loraplus_unet_lr_ratio: float | None = option(
        None, "LoRA+ ratio of the UNet's up weights (empty = loraplus_lr_ratio).", "network", minimum=0.0,
        differs="sd-scripts takes it only as a network_args entry; that works here too")
    loraplus_text_encoder_lr_ratio: float | None = option(
        None, "LoRA+ ratio of the text encoders' up weights (empty = loraplus_lr_ratio).", "network", minimum=0.0,
        differs="sd-scripts takes it only as a network_args entry; that works here too")
    dim_from_weights: bool = option(False, "Take each layer's rank and alpha from the network_weights file (which "
                                    "layers too) instead of network_dim/conv_dim. networks.lora only.", "network")
    scale_weight_norms: float | None = option(
        None, "Max-norm regularisation: after each step, scale every LoRA layer down whose weight change "
        "(up @ down * alpha/dim) has a norm above this (1 is a good start; empty = off). networks.lora only.",
        "network", minimum=0.0)

    # --- embedding (textual inversion) ---
    embedding_name: str = option("", "The word typed in prompts to use the embedding (network_module embedding: also "
                                 "its file name; empty = output_name).", "embedding")
    token_string: str = option("", "The word in the captions the embedding replaces (sd-scripts' token_string; empty "
                               "= trigger_word); captions without it get the embedding's name put first.", "embedding")
    init_word: str = option("*", "Text whose token vectors start the embedding, repeated or cut to the vector count "
                            "(* = zeros).", "embedding", aliases=("--init_text",))
    num_vectors_per_token: int = option(1, "Vectors (prompt tokens) the embedding takes.", "embedding",
                                        minimum=1, maximum=75)
    embedding_template: str = option("captions", "Prompts an embedding trains with: captions, subject, style, "
                                     "subject_filewords, style_filewords, or a .txt file of lines with [name] and "
                                     "[filewords].", "embedding", aliases=("--template",))
    use_object_template: bool = option(False, "sd-scripts' flag: the subject template instead of captions.", "embedding")
    use_style_template: bool = option(False, "sd-scripts' flag: the style template instead of captions.", "embedding")
    embedding_overwrite: bool = option(False, "Replace an embedding of the same name that already exists.",
                                       "embedding")
    embedding_format: str = option("safetensors", "File format of the embedding.", "embedding",
                                   choices=("safetensors", "pt"))
    embedding_output_dir: str = option("", "Folder of the embedding file of a pivotal run (empty = output_dir).",
                                       "embedding")
    embedding_file_name: str = option("", "File name of a pivotal run's own embedding file, before the LoRA file's "
                                      "suffix (empty = the embedding's word; in the WebUI, output_name).", "embedding")
    embedding_lr: float | None = option(None, "Learning rate of the embedding's vectors (empty = learning_rate).",
                                        "embedding", minimum=0.0)
    pivotal_tuning: bool = option(False, "Train an embedding together with the LoRA-family network of "
                                  "network_module; the LoRA file bundles it, and it is saved as its own file too.",
                                  "embedding")

    # --- optimizer ---
    learning_rate: float = option(1e-4, "Learning rate used where unet_lr / text_encoder_lr are not set.",
                                  "optimizer", minimum=0.0)
    unet_lr: float | None = option(None, "Learning rate of the UNet LoRA.", "optimizer", minimum=0.0)
    text_encoder_lr: float | None = option(None, "Learning rate of the text-encoder LoRA.", "optimizer", minimum=0.0)
    optimizer_type: str = option("AdamW", "Optimizer, by sd-scripts' name, or the module.Class path of an installed "
                                 "package's optimizer (e.g. torch.optim.Adagrad, pytorch_optimizer.CAME), which "
                                 "gets optimizer_args. *8bit and Paged* need bitsandbytes and a CUDA GPU; "
                                 "*ScheduleFree keep their own schedule (lr_scheduler is not used).", "optimizer",
                                 choices=OPTIMIZERS, open_choices=True)
    optimizer_args: list = option([], "Extra key=value optimizer arguments (e.g. weight_decay=0.01).", "optimizer")
    lr_scheduler: str = option("cosine", "Learning-rate schedule (adafactor: with Adafactor's relative_step=True "
                               "only; cosine_with_min_lr, warmup_stable_decay, piecewise_constant and inverse_sqrt "
                               "as transformers and diffusers define them).", "optimizer", choices=SCHEDULERS,
                               differs="constant with a warm-up, which kohya refuses, trains as constant_with_warmup")
    lr_warmup_steps: float = option(0, "Warm-up steps, or a fraction of all steps when below 1.", "optimizer",
                                    minimum=0.0)
    lr_scheduler_num_cycles: int = option(1, "Restarts of cosine_with_restarts.", "optimizer", minimum=1)
    lr_scheduler_power: float = option(1.0, "Power of the polynomial schedule.", "optimizer", minimum=0.0)
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this (0 = no clipping).", "optimizer", minimum=0.0)

    # --- optimizers and schedules (issue 14) ---
    lr_scheduler_type: str = option("", "A scheduler class used instead of lr_scheduler: module.Class, or a class "
                                    "name of torch.optim.lr_scheduler (e.g. StepLR), built with lr_scheduler_args.",
                                    "optimizer")
    lr_scheduler_args: list = option([], "Extra key=value schedule arguments: those of lr_scheduler_type's class "
                                     "(e.g. step_size=10 gamma=0.5); step_rules=\"1:10,0.1:20,0.01\" for "
                                     "piecewise_constant; warmup_type / decay_type (linear, cosine, 1-sqrt) for "
                                     "warmup_stable_decay.", "optimizer")
    lr_decay_steps: float = option(0, "warmup_stable_decay's decay at the end: steps, or a fraction of all steps "
                                   "when below 1.", "optimizer", minimum=0.0)
    lr_scheduler_min_lr_ratio: float | None = option(
        None, "Where cosine_with_min_lr and warmup_stable_decay end, as a fraction of the learning rate (empty: not "
        "set; warmup_stable_decay then ends at 0).", "optimizer", minimum=0.0, maximum=1.0, placeholder="empty: not set")
    lr_scheduler_timescale: int | None = option(
        None, "inverse_sqrt's time scale in steps (empty: the warm-up steps, or 10000 without warm-up).", "optimizer",
        minimum=1, placeholder="empty: the warm-up steps")

    # --- EMA of the trained weights (issue 14) ---
    ema_decay: float = option(0.0, "Keep an exponential moving average of the trained weights and save it as "
                              "<file>-ema.safetensors beside each file (e.g. 0.999; 0 = off).", "training",
                              minimum=0.0, differs="sd-scripts has no EMA for networks")
    ema_update_every: int = option(1, "Update the average every N optimizer steps.", "training", minimum=1,
                                   differs="sd-scripts has no EMA for networks")
    ema_start_step: int = option(0, "The average starts from the weights after this step (0 = the starting "
                                 "weights); no -ema file is written before.", "training", minimum=0,
                                 differs="sd-scripts has no EMA for networks")
    ema_for_samples: bool = option(False, "Draw the sample images with the averaged weights.", "training",
                                   differs="sd-scripts has no EMA for networks")

    # --- training ---
    output_dir: str = option("output", "Folder the LoRA files are written to.", "training")
    output_name: str = option("lora", "File name of the LoRA, without extension.", "training")
    train_batch_size: int = option(1, "Images per step.", "training", minimum=1)
    # kohya's pair: epochs, when set, decide the length (max_train_steps is then ignored);
    # otherwise max_train_steps does, 1600 when it is not set either.
    max_train_epochs: int = option(0, "Epochs to train (0 = not set). When set it decides the length and "
                                   "max_train_steps is ignored, as in kohya.", "training", minimum=0)
    max_train_steps: int = option(0, "Steps to train when max_train_epochs is not set (0 = not set: with neither "
                                  "set, kohya's default 1600, which the plan says, with a warning when that ends "
                                  "the first epoch early).", "training", minimum=0)
    gradient_accumulation_steps: int = option(1, "Batches summed before each optimizer step.", "training", minimum=1)
    mixed_precision: str = option("auto", "Compute precision: auto (what this device is fast at: bf16 on GPUs and CPUs "
                                  "with bf16 units, fp16 on GPUs without bf16, fp32 elsewhere; the plan says which), "
                                  "no (fp32), fp16 or bf16.", "training", choices=PRECISIONS,
                                  differs="default auto (sd-scripts: no); auto is ours")
    save_precision: str = option("fp16", "Precision of the saved file.", "training", choices=SAVE_PRECISIONS)
    # --- precision (issue 14) ---
    full_fp16: bool = option(False, "Keep the trained weights, their gradients and the optimizer's state in fp16 too "
                             "(needs mixed_precision=fp16). Saves memory; small updates can be lost: experimental, "
                             "as in sd-scripts.", "training")
    full_bf16: bool = option(False, "The same in bf16 (needs mixed_precision=bf16).", "training")
    fp8_base: bool = option(False, "Store the base UNet's weights in fp8 (e4m3) to save memory; needs "
                            "mixed_precision fp16 or bf16 and a CUDA GPU with fp8 (RTX 40xx, L4, H100), and a model "
                            "this trainer loads itself (not the WebUI's).", "training",
                            differs="the text encoders stay in the compute dtype (sd-scripts' fp8_base_unet)")
    no_half_vae: bool = option(False, "Run the VAE in fp32 even when the model holds it in half precision (the "
                               "WebUI's loaded VAE without --no-half-vae); models loaded here always encode in fp32.",
                               "training", differs="without it, a model loaded here still encodes in fp32 (SD's VAE "
                               "overflows in fp16); sd-scripts would use the mixed-precision dtype")
    vae_batch_size: int = option(1, "Images encoded together when caching latents (same bucket only): faster, more "
                                 "memory.", "training", minimum=1)
    lowram: bool = option(False, "sd-scripts' low-RAM loading: here checkpoints are always read memory-mapped and "
                          "moved to the training device before training, so it only records ss_lowram.", "training")
    highvram: bool = option(False, "Keep CUDA's freed memory cached while caching latents (no empty_cache after each "
                            "VAE batch): a little faster on GPUs with memory to spare.", "training")
    # --- compile (issue 16) ---
    torch_compile: bool = option(False, "Compile the UNet with torch.compile, once per bucket shape on its first "
                                 "step. Meant for CUDA GPUs; on a 2-core CPU it measured 2.7x slower per step after "
                                 "4 minutes of compiling. Where compiling fails, training goes on without it and "
                                 "says so in one line.", "training")
    dynamo_backend: str = option("inductor", "torch.compile's backend for torch_compile (inductor; eager and "
                                 "aot_eager to check that a model compiles without generating code).", "training")
    save_every_n_epochs: int = option(0, "Also save name-000002.safetensors every N epochs.", "training", minimum=0)
    save_every_n_steps: int = option(0, "Also save name-step00000100.safetensors every N steps.", "training",
                                     minimum=0)
    save_state: bool = option(False, "Also save the run state (optimizer, random generators, position) beside "
                              "every saved file, as <file>-state/, to continue it later with resume.", "training")
    save_state_on_train_end: bool = option(False, "Save the run state once, at the end (<output_name>-state/).",
                                           "training")
    save_last_n_epochs_state: int = option(0, "Keep only the newest N epoch states (0 = keep all).", "training",
                                           minimum=0)
    save_last_n_steps_state: int = option(0, "Keep only the newest N step states (0 = keep all).", "training",
                                          minimum=0)
    # --- base weights in half precision (issue 16) ---
    base_weights_dtype: str = option(
        "", "Store the frozen base UNet's and text encoders' Linear/Conv weights in fp16 or bf16 while computing in "
        "fp32 (mixed_precision=no): each layer up-casts its weight as it computes, so the weights take about half "
        "the memory. fp16 holds an fp16 checkpoint exactly (the same training as without it); bf16 rounds it. Empty: "
        "the weights in the compute dtype. In the WebUI only where the loaded model already is in that dtype (then it "
        "changes nothing).", "training",
        choices=BASE_WEIGHTS_DTYPES)
    # --- run and save options (issue 14) ---
    save_last_n_epochs: int = option(0, "Keep only the newest N epoch files (name-000004...), deleting older ones as "
                                     "new ones are written; the final file is never deleted (0 = keep all).",
                                     "training", minimum=0)
    save_last_n_steps: int = option(0, "Keep only the step files (name-stepN) of the last N steps, deleting older "
                                    "ones as new ones are written, as kohya counts it: steps, not files "
                                    "(0 = keep all).", "training", minimum=0)
    save_n_epoch_ratio: int = option(0, "Save about N epoch files in all: replaces save_every_n_epochs with "
                                     "floor(epochs / N), at least 1 (0 = off).", "training", minimum=0)
    save_model_as: str = option("safetensors", "File format of a LoRA-family file: safetensors (with the ss_* "
                                "metadata), or ckpt / pt: a plain torch state dict without metadata, as kohya "
                                "writes them; the WebUI's Lora loader reads all three.", "training",
                                choices=("safetensors", "ckpt", "pt"))
    output_config: bool = option(False, "Write the resolved config to the --config_file path (default: "
                                 "<output_dir>/<output_name>.toml) and exit without training, as sd-scripts does; "
                                 "an existing file is not replaced.", "training", ui=False,
                                 differs="without --config_file it writes <output_dir>/<output_name>.toml")
    no_metadata: bool = option(False, "Leave the ss_* training metadata out of the file, as kohya does: only "
                               "ss_v2, ss_base_model_version, ss_network_module/dim/alpha/args and the "
                               "modelspec.* keys stay.", "training")
    metadata_title: str = option("", "modelspec.title of the file (empty: output_name).", "training")
    metadata_author: str = option("", "modelspec.author of the file.", "training")
    metadata_description: str = option("", "modelspec.description of the file.", "training")
    metadata_license: str = option("", "modelspec.license of the file.", "training")
    metadata_tags: str = option("", "modelspec.tags of the file (comma-separated).", "training")
    max_data_loader_n_workers: int = option(
        0, "Accepted for sd-scripts' configs; no effect: images are read in the training process (with "
        "cache_latents, once, before the first step).", "training", minimum=0,
        differs="no loader processes: images are read in the training process")
    persistent_data_loader_workers: bool = option(
        False, "Accepted for sd-scripts' configs; no effect (there are no loader processes to keep).", "training",
        differs="no loader processes to keep")
    resume: str = option("", "Continue a run from a state folder it saved (<name>-...-state): the same steps, "
                         "random draws and optimizer, so the result equals an uninterrupted run. network_weights "
                         "instead starts from a file's weights with a new optimizer and schedule.", "training",
                         differs="a state folder this trainer saved (not accelerate's), resumed bit for bit")
    gradient_checkpointing: bool = option(False, "Trade compute for memory.", "training")
    xformers: bool = option(False, "Use xformers attention (CUDA, when installed).", "training")
    seed: int = option(42, "Seed for noise, data order, augmentation and initial weights.", "training",
                       minimum=0, maximum=2**32 - 1)
    noise_offset: float = option(0.0, "Add a per-channel offset to the noise (darker/brighter images).", "noise",
                                 minimum=0.0)
    min_snr_gamma: float = option(0.0, "Min-SNR loss weighting gamma (5 is common; 0 = off).", "noise",
                                  minimum=0.0)
    # --- noise, timesteps and loss (issue 14) ---
    noise_offset_random_strength: bool = option(
        False, "Draw the noise offset's strength at random between 0 and noise_offset, once per step.", "noise")
    adaptive_noise_scale: float = option(
        0.0, "Add this times the absolute mean of each latent channel to noise_offset, so images far from mid-grey "
        "get a larger offset (needs noise_offset; may be negative; 0 = off).", "noise")
    multires_noise_iterations: int = option(
        0, "Multi-resolution (pyramid) noise: add this many layers of coarser noise (6-10 is usual; 0 = off).",
        "noise", minimum=0)
    multires_noise_discount: float = option(
        0.3, "Weight of each coarser multires noise layer relative to the one before (no effect without "
        "multires_noise_iterations).", "noise", minimum=0.0)
    ip_noise_gamma: float = option(
        0.0, "Input perturbation: the noised input gets this much extra noise, the target does not (about 0.1 is "
        "usual; 0 = off).", "noise", minimum=0.0)
    ip_noise_gamma_random_strength: bool = option(
        False, "Draw the input perturbation's strength at random between 0 and ip_noise_gamma, once per step.",
        "noise")
    min_timestep: int = option(0, "Smallest timestep trained (0-999); timesteps are drawn from "
                               "[min_timestep, max_timestep).", "noise", minimum=0, maximum=999)
    max_timestep: int = option(1000, "Timesteps trained are below this (1-1000); equal to min_timestep: only that "
                               "timestep is trained.", "noise", minimum=1, maximum=1000)
    loss_type: str = option("l2", "Loss function: l2 (squared error), l1, huber or smooth_l1 (pseudo-Huber: "
                            "squared for small errors, linear for large ones).", "noise", choices=LOSS_TYPES)
    huber_schedule: str = option("snr", "How the Huber threshold changes with the timestep: constant (huber_c x "
                                 "huber_scale), exponential (from huber_scale at t=0 down to huber_c x huber_scale "
                                 "at the end), snr (from 1 where the image is clear down to huber_c in pure noise).",
                                 "noise", choices=HUBER_SCHEDULES)
    huber_c: float = option(0.1, "Huber threshold (huber and smooth_l1): errors below it count squared, above it "
                            "linearly.", "noise", minimum=0.0)
    huber_scale: float = option(1.0, "Scale of the constant and exponential Huber thresholds.", "noise", minimum=0.0)
    debiased_estimation_loss: bool = option(
        False, "Weight each example's loss by 1/sqrt(SNR) (1/(SNR+1) for v-prediction), which evens out "
        "the timesteps' contributions.", "noise")
    scale_v_pred_loss_like_noise_pred: bool = option(
        False, "v-prediction models: scale the loss by SNR/(SNR+1) so each timestep weighs as in noise prediction.",
        "noise", differs="refused when the loaded model predicts noise, whatever v_parameterization says (the "
        "prediction type is read from the checkpoint)")
    v_pred_like_loss: float = option(
        0.0, "Noise-prediction models: add this times a v-prediction-like loss, which weighs the noisiest "
        "timesteps more (0 = off).", "noise", minimum=0.0,
        differs="refused when the loaded model predicts v, whatever v_parameterization says")
    logging_dir: str = option("", "Write TensorBoard logs here (empty = no logs).", "training")
    log_prefix: str = option("", "Prefix of the TensorBoard run folder.", "training")
    training_comment: str = option("", "Stored in the file's ss_training_comment.", "training")

    # --- sample images during training ---
    sample_every_n_steps: int = option(0, "Generate sample images every N steps (0 = off).", "sampling", minimum=0)
    sample_every_n_epochs: int = option(0, "Generate sample images after every N epochs (0 = off); as in "
                                        "sd-scripts, sample_every_n_steps is then ignored.", "sampling", minimum=0)
    sample_at_first: bool = option(False, "Also generate sample images before the first step.", "sampling")
    sample_prompts: str = option("", "A .txt file with one prompt per line and kohya's options: --n negative "
                                 "prompt, --w width, --h height, --s steps, --l CFG scale, --d seed.", "sampling")
    sample_sampler: str = option("ddim", "Sampler of the sample images (ddim, euler and euler_a work here; "
                                 "k_euler and k_euler_a are the same two).", "sampling", choices=KOHYA_SAMPLERS,
                                 differs="only ddim, euler and euler_a (k_euler, k_euler_a) sample here")

    # --- validation loss (issue 14) ---
    validation_split: float = option(
        0.0, "Fraction of each training folder's images held out for the validation loss, never trained on "
        "(a dataset config can set it per dataset or subset; 1.0 holds out a whole subset). Regularisation "
        "images are never held out.", "validation", minimum=0.0, maximum=1.0,
        differs="an image is either held out or trained on; sd-scripts' rounding can put one image of an odd-sized "
        "folder in both")
    validation_seed: int | None = option(
        None, "Seed of which images are held out (validation_split) and of the validation loss' fixed noise and "
        "timesteps (empty = seed).", "validation", minimum=0, maximum=2**32 - 1)
    validate_every_n_steps: int = option(0, "Also compute the validation loss every N steps (0 = off).",
                                         "validation", minimum=0)
    validate_every_n_epochs: int = option(
        0, "Compute the validation loss after every N epochs (0 = not set: after every epoch, as sd-scripts). "
        "It is always computed at the end of the run too.", "validation", minimum=0,
        differs="also computed at the end of the run; 0 stands for sd-scripts' unset value (None)")
    max_validation_steps: int = option(0, "Validation batches per validation pass (0 = all of them).",
                                       "validation", minimum=0)

    # --- hypernetwork ---
    hypernetwork_layer_structure: str = option(
        "1, 2, 1", "Hypernetwork (network_module hypernetwork): the widths of its layers as multiples of the "
        "attention's width; the first and last must be 1 (the WebUI's default 1, 2, 1).", "hypernetwork")
    hypernetwork_activation_func: str = option(
        "linear", "Activation after each hidden layer (linear: none; swish is the WebUI's hardswish).",
        "hypernetwork", choices=HYPERNETWORK_ACTIVATIONS)
    hypernetwork_layer_norm: bool = option(False, "Add a layer normalisation after each layer.", "hypernetwork")
    hypernetwork_use_dropout: bool = option(False, "Use dropout in the hypernetwork's hidden layers.",
                                            "hypernetwork")
    hypernetwork_dropout_structure: str = option(
        "", "Dropout after each layer, one number per layer structure entry, first and last 0 (e.g. 0, 0.05, 0); "
        "empty with use_dropout: 0.3 after the hidden layers, as the WebUI does.", "hypernetwork")
    hypernetwork_last_layer_dropout: bool = option(
        False, "Without a dropout structure: also drop out after the last hidden layer.", "hypernetwork")
    hypernetwork_weight_init: str = option("Normal", "Initialisation of the layers' weights (Kaiming suits relu-like "
                                           "activations, Xavier sigmoid-like ones).", "hypernetwork",
                                           choices=HYPERNETWORK_INITS)
    hypernetwork_activate_output: bool = option(False, "Apply the activation after the last layer too.",
                                                "hypernetwork")
    hypernetwork_sizes: str = option(
        "context", "Which attention widths get a hypernetwork, as the WebUI's Modules checkboxes: context (the "
        "model's cross-attention width: SD1 768, SD2 1024, SDXL 2048), self (the self-attention widths too: "
        "320, 640, 1280; SDXL 640, 1280), or numbers, e.g. 768, 320, 640, 1280.", "hypernetwork")

    config_version: int = option(CONFIG_VERSION, "Version of this config's layout.", "meta")

    # --- derived values ---
    def resolution_wh(self) -> tuple[int, int]:
        parts = [p.strip() for p in str(self.resolution).split(",") if p.strip()]
        width = int(parts[0])
        height = int(parts[1]) if len(parts) > 1 else width
        return width, height

    def effective_unet_lr(self) -> float:
        return self.learning_rate if self.unet_lr is None else self.unet_lr

    def effective_text_encoder_lr(self) -> float:
        return self.learning_rate if self.text_encoder_lr is None else self.text_encoder_lr

    def train_unet(self) -> bool:
        return not self.network_train_text_encoder_only

    def train_text_encoder(self) -> bool:
        return not self.network_train_unet_only and self.effective_text_encoder_lr() > 0

    def sampling_enabled(self) -> bool:
        return bool(self.sample_every_n_steps or self.sample_every_n_epochs or self.sample_at_first)

    def parsed_network_args(self) -> dict[str, str]:
        return parse_key_values(self.network_args, "network_args")

    def parsed_optimizer_args(self) -> dict[str, Any]:
        return {key: _literal(value) for key, value in parse_key_values(self.optimizer_args, "optimizer_args").items()}

    # --- checks ---
    def problems(self) -> list[str]:
        """Every problem with the values, each saying what to change."""
        found = []
        for spec in fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if value is None:
                continue
            if meta.get("choices") and value not in meta["choices"] and not meta.get("open_choices"):
                allowed = ", ".join(str(c) for c in meta["choices"])
                found.append(f"{spec.name}={value!r} is not one of: {allowed}")
            if meta.get("min") is not None and value < meta["min"]:
                found.append(f"{spec.name}={value} must be at least {meta['min']}")
            if meta.get("max") is not None and value > meta["max"]:
                found.append(f"{spec.name}={value} must be at most {meta['max']}")
        try:
            width, height = self.resolution_wh()
            if width < 64 or height < 64 or width % 8 or height % 8:
                found.append(f"resolution={self.resolution!r}: sides must be multiples of 8, at least 64")
        except ValueError:
            found.append(f"resolution={self.resolution!r}: write 512 or 512,768")
        if self.min_bucket_reso > self.max_bucket_reso:
            found.append("min_bucket_reso must not be larger than max_bucket_reso")
        elif self.enable_bucket and not self.bucket_no_upscale and _resolution_side(self) > self.max_bucket_reso:
            # kohya refuses this too: no bucket could hold the training area.
            found.append(f"resolution={self.resolution} is larger than max_bucket_reso={self.max_bucket_reso}: "
                         f"raise max_bucket_reso to at least {_resolution_side(self)} or lower the resolution")
        if self.network_train_unet_only and self.network_train_text_encoder_only:
            found.append("network_train_unet_only and network_train_text_encoder_only exclude each other")
        if self.random_crop and self.cache_latents:
            found.append("random_crop needs a fresh crop every step: turn off cache_latents (--no-cache_latents)")
        if self.cache_text_encoder_outputs:
            found += self._text_cache_problems()
        if self.cache_latents_to_disk and not self.cache_latents:
            found.append("cache_latents_to_disk needs cache_latents")
        found += self._compile_problems()
        found += _file_name_problems("output_name", self.output_name)
        if self.network_weights:
            from .formats.lora_file import network_file_problems  # imports torch, as below

            found += [f"network_weights {self.network_weights}: {problem}"
                      for problem in network_file_problems(self.network_weights)]
        for name in ("network_args", "optimizer_args", "lr_scheduler_args"):
            try:
                parse_key_values(getattr(self, name), name)
            except ConfigError as error:
                found.append(str(error))
        if not any(name in problem for problem in found for name in ("network_args", "network_module")):
            from .networks.registry import method_problems  # imports torch, which reading a config does not need

            found += method_problems(self)
        if self.sampling_enabled():
            found += self._sampling_problems()
        found += self._netargs_problems()
        found += self._noise_loss_problems()
        found += self._configio_problems()
        found += self._dataset_config_problems()
        found += self._caption_image_problems()
        found += self._optim_problems()
        found += self._base_weights_problems()
        return found

    def _noise_loss_problems(self) -> list[str]:
        """The noise and loss options that contradict each other (kohya's own refusals, and
        the values its code would fail on)."""
        found = []
        if self.adaptive_noise_scale and not self.noise_offset:
            found.append("adaptive_noise_scale adds to noise_offset, which is 0: set noise_offset (e.g. 0.05) or "
                         "adaptive_noise_scale=0")
        if self.min_timestep > self.max_timestep:
            found.append(f"min_timestep={self.min_timestep} is above max_timestep={self.max_timestep}: timesteps are "
                         "drawn from [min_timestep, max_timestep)")
        elif self.min_timestep == self.max_timestep == 1000:
            found.append("min_timestep = max_timestep = 1000 trains timestep 1000, which does not exist (0-999): "
                         "lower both")
        if self.loss_type in HUBER_LOSSES and self.huber_c <= 0:
            found.append(f"huber_c must be above 0 with loss_type={self.loss_type} (0.1 is kohya's default)")
        if self.v_pred_like_loss and self.v_parameterization:
            found.append("v_pred_like_loss is for noise-prediction models, and v_parameterization is set: "
                         "set v_pred_like_loss to 0")
        return found

    def _netargs_problems(self) -> list[str]:
        """LoRA+, dim_from_weights, scale_weight_norms and EMA: what they need."""
        found = []
        try:
            args = self.parsed_network_args()
        except ConfigError:  # reported with the other network_args problems
            args = {}
        plus = [key for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")
                if getattr(self, key) is not None or key in args]
        lora_only = [*plus, *[key for key in ("dim_from_weights", "scale_weight_norms") if getattr(self, key)]]
        if lora_only and self.network_module != "networks.lora":
            found.append(f"{', '.join(lora_only)}: only network_module networks.lora (LoRA, LoCon) has them "
                         f"(it is {self.network_module})")
        if plus and (self.optimizer_type.lower() == "prodigy" or "dadapt" in self.optimizer_type.lower()):
            # as sd-scripts says: these adapt one learning rate for every group, so the ratio is lost
            found.append(f"{plus[0]} (LoRA+) cannot be used with {self.optimizer_type}: it adapts a single "
                         "learning rate for all parameter groups, so the up weights' ratio would have no effect; "
                         "choose AdamW (or another optimizer) or remove the LoRA+ ratio")
        if self.dim_from_weights and not self.network_weights:
            found.append("dim_from_weights takes the ranks from network_weights: give the LoRA file there")
        if self.ema_decay >= 1:
            found.append(f"ema_decay={self.ema_decay} must be below 1 (e.g. 0.999; 0 = off)")
        if self.ema_for_samples and not self.ema_decay:
            found.append("ema_for_samples needs ema_decay (e.g. 0.999)")
        return found

    def _configio_problems(self) -> list[str]:
        """The run/save options (issue 14): what kohya would crash on, or a format for another kind of file."""
        found = []
        if self.save_model_as != "safetensors" and (self.network_module in ("embedding", "hypernetwork")
                                                     or self.pivotal_tuning):
            found.append(f"save_model_as={self.save_model_as} is for LoRA-family files: an embedding's format is "
                         "embedding_format, a hypernetwork is always .pt; set save_model_as=safetensors")
        if self.save_last_n_epochs and not (self.save_every_n_epochs or self.save_n_epoch_ratio):
            found.append("save_last_n_epochs keeps epoch files, but none are saved: set save_every_n_epochs or "
                         "save_n_epoch_ratio, or clear save_last_n_epochs")
        if self.save_last_n_steps and not self.save_every_n_steps:
            found.append("save_last_n_steps keeps step files, but none are saved: set save_every_n_steps, or "
                         "clear save_last_n_steps")
        return found

    def _dataset_config_problems(self) -> list[str]:
        """The dataset config file is read now, so a bad key is reported before anything loads."""
        if not self.dataset_config:
            return []
        from .dataset.dataset_config import dataset_config_problems  # imports the dataset side

        return dataset_config_problems(self)

    def _optim_problems(self) -> list[str]:
        """Optimizer, schedule and precision options sd-scripts refuses, or that cannot be built here."""
        from .train.optimizers import optimizer_type_problems, uses_relative_step  # no torch needed
        from .train.schedulers import scheduler_problems  # imports torch, which reading a config does not need

        found = optimizer_type_problems(self.optimizer_type)
        try:
            relative_step = uses_relative_step(self.optimizer_type, self.parsed_optimizer_args())
        except ConfigError:
            relative_step = False
        if self.lr_scheduler == "adafactor" and not relative_step and not self.lr_scheduler_type:
            found.append("lr_scheduler adafactor follows Adafactor's own relative-step rate: set optimizer_type "
                         "Adafactor with optimizer_args relative_step=True, or choose another lr_scheduler")
        found += scheduler_problems(self)
        if self.full_fp16 and self.full_bf16:
            found.append("full_fp16 and full_bf16 exclude each other: choose one")
        for flag, precision in (("full_fp16", "fp16"), ("full_bf16", "bf16")):
            if getattr(self, flag) and self.mixed_precision != precision:
                found.append(f"{flag} needs mixed_precision={precision} (it is {self.mixed_precision}), as in "
                             "sd-scripts")
        if (self.full_fp16 or self.full_bf16) and (self.network_module == "embedding" or self.pivotal_tuning):
            found.append("full_fp16 / full_bf16 train LoRA-family networks and hypernetworks; an embedding's "
                         "vectors stay in fp32: turn it off")
        if self.fp8_base and self.mixed_precision == "no":
            found.append("fp8_base needs mixed_precision fp16 or bf16 (the fp8 weights are upcast to it in each layer)")
        return found

    def _compile_problems(self) -> list[str]:
        if not self.torch_compile:
            return []
        from .train.compile import backend_problems  # imports torch's compiler

        return backend_problems(self.dynamo_backend)

    def _base_weights_problems(self) -> list[str]:
        """base_weights_dtype stores weights for fp32 compute; with 16-bit compute they already are."""
        dtype = self.base_weights_dtype
        if not dtype:
            return []
        if self.fp8_base:
            return ["base_weights_dtype and fp8_base both choose how the base UNet is stored: choose one"]
        if self.mixed_precision not in ("no", "auto", dtype):
            full = " and full_fp16" if self.full_fp16 else " and full_bf16" if self.full_bf16 else ""
            return [f"base_weights_dtype={dtype} stores the base weights in 16 bits for fp32 compute "
                    f"(mixed_precision=no); with mixed_precision={self.mixed_precision}{full} they are held in "
                    f"{self.mixed_precision} already: leave base_weights_dtype empty"]
        return []

    def parsed_lr_scheduler_args(self) -> dict[str, Any]:
        return {key: _literal(value)
                for key, value in parse_key_values(self.lr_scheduler_args, "lr_scheduler_args").items()}

    def _text_cache_problems(self) -> list[str]:
        """Cached conditioning is computed once per caption, so captions must not change
        between steps and no text-encoder layer may train."""
        varying = [name for name in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate")
                   if getattr(self, name)]
        found = [f"cache_text_encoder_outputs needs fixed captions: turn off {name}" for name in varying]
        if self.train_text_encoder():
            found.append("cache_text_encoder_outputs needs frozen text encoders: set network_train_unet_only")
        return found

    def _caption_image_problems(self) -> list[str]:
        from .dataset.caption_image_checks import caption_image_problems  # keeps this file short

        return caption_image_problems(self)

    def _sampling_problems(self) -> list[str]:
        """A prompt file that cannot be read is reported now, not at the first sample."""
        # Imported here: they pull in torch, which reading a config does not need.
        from .train.sample_prompts import SamplePromptError, read_sample_prompts
        from .train.samplers import SAMPLERS

        found = []
        if self.sample_sampler in KOHYA_SAMPLERS and self.sample_sampler not in SAMPLERS:
            found.append(f"sample_sampler={self.sample_sampler!r} is an sd-scripts sampler this trainer cannot "
                         f"sample with; use one of: {', '.join(SAMPLERS)}")
        if not self.sample_prompts:
            return found + ["sample images are on (sample_every_n_steps, sample_every_n_epochs or sample_at_first) "
                            "but sample_prompts is empty: give a .txt file of prompts, or turn sampling off"]
        try:
            read_sample_prompts(self.sample_prompts)
        except SamplePromptError as error:
            found += str(error).splitlines()
        return found

    def validate(self) -> "TrainConfig":
        found = self.problems()
        if found:
            raise ConfigError("The training config has problems:\n  - " + "\n  - ".join(found))
        return self

    # --- files ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        return cls(**coerce_values(values, source))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **coerce_values(changes, "arguments"))


# Characters and names Windows refuses in a file name (Linux refuses only "/"): a LoRA is
# often copied between the two.
_BAD_NAME_CHARACTERS = set('<>:"/\\|?*') | {chr(code) for code in range(32)}
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
MAX_NAME_LENGTH = 150  # leaves room for "-step00000100-state/train_state.bin" under 255


def _file_name_problems(key: str, name: str) -> list[str]:
    bad = sorted(set(name) & _BAD_NAME_CHARACTERS)
    if not name.strip():
        return [f"{key} is empty: give the file a name"]
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return [f"{key}={name!r} has characters a file name cannot have on Windows or Linux: {shown}"]
    if name.startswith(".") or name.endswith((".", " ")):
        return [f"{key}={name!r} must not start with a dot or end with a dot or a space"]
    if name.split(".")[0].upper() in _RESERVED_NAMES:
        return [f"{key}={name!r} is a name Windows reserves for a device; choose another"]
    if len(name) > MAX_NAME_LENGTH:
        return [f"{key} is {len(name)} characters long; keep it under {MAX_NAME_LENGTH}"]
    return []


def _resolution_side(config: "TrainConfig") -> int:
    try:
        return max(config.resolution_wh())
    except ValueError:
        return 0


def field_specs() -> dict[str, dataclasses.Field]:
    return {spec.name: spec for spec in fields(TrainConfig)}


def coerce_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check names and convert values to each field's type; report all problems at once."""
    specs = field_specs()
    result, problems = {}, []
    for key, value in values.items():
        if key not in specs:
            close = difflib.get_close_matches(key, specs, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"unknown option {key!r} in {source}{hint}")
            continue
        try:
            result[key] = convert_value(specs[key], value)
        except (TypeError, ValueError) as error:
            problems.append(f"{key}={value!r}: {error}")
    if problems:
        raise ConfigError("Cannot read the training config:\n  - " + "\n  - ".join(problems))
    return result


def convert_value(spec: dataclasses.Field, value: Any) -> Any:
    kind = str(spec.type)
    if value is None:
        if "None" in kind:
            return None
        raise ValueError("a value is required")
    if kind.startswith("bool"):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError("expected true or false")
        return bool(value)
    if kind.startswith("int"):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("expected a whole number")
        return int(value)
    if kind.startswith("float"):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("expected a finite number (not nan or inf)")
        return number
    if kind.startswith("list"):
        if isinstance(value, str):
            return value.split() if value.strip() else []
        return [str(item) for item in value]
    return str(value)


def parse_key_values(items: list[str], name: str) -> dict[str, str]:
    parsed = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{name}: {item!r} must be written key=value")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def _literal(text: str) -> Any:
    """'0.01' -> 0.01, 'True' -> True, '(0.9,0.99)' -> (0.9, 0.99); anything else stays a string."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# --- reading and writing config files ---

# sd-scripts options that need no counterpart here, because this trainer always behaves one
# way. A kohya config that sets them still loads, and the user is told what happens instead.
KOHYA_OPTIONS_WITHOUT_EFFECT = {
    "sdpa": "PyTorch SDPA attention is always used",
    "mem_eff_attn": "PyTorch SDPA attention is always used",
    "log_with": "TensorBoard logs are written when logging_dir is set",
}


def without_kohya_only_options(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split off sd-scripts options that have no effect here; returns (values, notes)."""
    kept = {k: v for k, v in values.items() if k not in KOHYA_OPTIONS_WITHOUT_EFFECT}
    notes = [f"{k} ignored: {KOHYA_OPTIONS_WITHOUT_EFFECT[k]}" for k in values if k in KOHYA_OPTIONS_WITHOUT_EFFECT]
    return kept, notes
