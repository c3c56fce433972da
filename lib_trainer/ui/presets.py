"""Starting points for beginners: each preset changes only the settings it names.

Dataset, output and base model fields are never touched by a preset; the user's own
choices for them stay. Values follow common kohya_ss practice for each kind of LoRA.
"""
from __future__ import annotations

from ..config import TrainConfig

CUSTOM = "(custom)"

# Where the form starts when a config sets neither length option. kohya's own default then
# is 1600 steps whatever the dataset's size; a beginner reasons in epochs, as every preset
# that trains a concept does.
BEGINNER_START = dict(max_train_epochs=10)

PRESETS: dict[str, dict] = {
    "Character / person, SD1.5": dict(
        resolution="512", network_dim=32, network_alpha=16.0, conv_dim=0, max_train_epochs=10, train_batch_size=2,
        learning_rate=1e-4, unet_lr=1e-4, text_encoder_lr=5e-5, optimizer_type="AdamW", lr_scheduler="cosine",
        lr_warmup_steps=0.05, shuffle_caption=True, keep_tokens=1, min_snr_gamma=5.0, noise_offset=0.0,
        mixed_precision="auto", save_every_n_epochs=2, network_train_unet_only=False),
    "Style, SD1.5": dict(
        resolution="512", network_dim=64, network_alpha=32.0, conv_dim=0, max_train_epochs=15, train_batch_size=2,
        learning_rate=1e-4, unet_lr=1e-4, text_encoder_lr=5e-5, optimizer_type="AdamW", lr_scheduler="cosine",
        lr_warmup_steps=0.05, shuffle_caption=True, keep_tokens=1, caption_dropout_rate=0.05, min_snr_gamma=5.0,
        mixed_precision="auto", save_every_n_epochs=3, network_train_unet_only=False),
    "LoCon (style, with convolutions), SD1.5": dict(
        resolution="512", network_dim=32, network_alpha=16.0, conv_dim=8, conv_alpha=4.0, max_train_epochs=12,
        train_batch_size=2, learning_rate=1e-4, unet_lr=1e-4, text_encoder_lr=5e-5, optimizer_type="AdamW",
        lr_scheduler="cosine", lr_warmup_steps=0.05, shuffle_caption=True, keep_tokens=1, min_snr_gamma=5.0,
        mixed_precision="auto", save_every_n_epochs=2),
    "Character, SDXL (UNet only)": dict(
        resolution="1024", max_bucket_reso=2048, network_dim=16, network_alpha=8.0, conv_dim=0,
        max_train_epochs=10, train_batch_size=1, learning_rate=1e-4, unet_lr=1e-4, text_encoder_lr=None,
        optimizer_type="AdamW", lr_scheduler="cosine", lr_warmup_steps=0.05, network_train_unet_only=True,
        shuffle_caption=False, cache_text_encoder_outputs=True, gradient_checkpointing=True,
        mixed_precision="auto", save_every_n_epochs=2),
    "Prodigy (no learning rate to tune)": dict(
        optimizer_type="Prodigy", learning_rate=1.0, unet_lr=1.0, text_encoder_lr=1.0, lr_scheduler="constant",
        lr_warmup_steps=0, optimizer_args=["weight_decay=0.01", "d_coef=1", "use_bias_correction=True"]),
    "Quick test (tiny model, CPU, ~1 min)": dict(
        resolution="128", min_bucket_reso=64, max_bucket_reso=256, network_dim=8, network_alpha=8.0, conv_dim=0,
        max_train_epochs=3, max_train_steps=0, train_batch_size=2, learning_rate=1e-3, unet_lr=None,
        text_encoder_lr=None, optimizer_type="AdamW", lr_scheduler="cosine", lr_warmup_steps=0.05,
        mixed_precision="auto", save_every_n_epochs=1),
}


def beginner_start(config: TrainConfig) -> TrainConfig:
    """The form's starting config: `config`, with BEGINNER_START when no length is set."""
    if config.max_train_epochs or config.max_train_steps:
        return config
    return config.replace(**BEGINNER_START)
