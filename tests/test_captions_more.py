"""The caption options of issue 14, each by its effect on the prompt a step trains with."""
from __future__ import annotations

import math
import random

import pytest

from lib_trainer.config import TrainConfig
from lib_trainer.dataset.captions import CaptionOptions, read_caption, training_caption, warmup_tag_count
from lib_trainer.dataset.plan import caption_options
from lib_trainer.hosts.prompt_weights import chunk_weights, parse_weights, weighted_token_ids


def caption(text, rng_seed=0, step=0, epoch=0, **options):
    return training_caption(text, CaptionOptions(**options), random.Random(rng_seed), step, epoch)


def test_keep_tokens_separator_keeps_the_front_and_the_part_after_a_second_one():
    text = "sks, 1girl ||| red, blue, green, yellow ||| best quality, masterpiece"
    outs = {caption(text, seed, shuffle_caption=True, keep_tokens_separator="|||") for seed in range(30)}
    assert len(outs) > 1  # the middle shuffles
    for out in outs:
        tags = out.split(", ")
        assert tags[:2] == ["sks", "1girl"] and tags[-2:] == ["best quality", "masterpiece"]
        assert sorted(tags[2:-2]) == ["blue", "green", "red", "yellow"]
    # keep_tokens is not used when the separator is in the caption
    assert caption("a ||| b, c", 3, shuffle_caption=True, keep_tokens=2, keep_tokens_separator="|||")[:1] == "a"


def test_keep_tokens_separator_is_taken_out_without_shuffling():
    assert caption("a, b ||| c, d", keep_tokens_separator="|||") == "a, b, c, d"
    assert caption("a, b, c", keep_tokens_separator="|||") == "a, b, c"  # untouched without it


def test_secondary_separator_moves_and_drops_as_one_tag_then_reads_as_tags():
    text = "a, red;;;hair, b, c"
    outs = {caption(text, seed, shuffle_caption=True, secondary_separator=";;;") for seed in range(40)}
    for out in outs:
        assert "red,hair" in out  # kohya replaces it with the bare separator
    dropped = [caption(text, seed, caption_tag_dropout_rate=0.5, secondary_separator=";;;") for seed in range(40)]
    assert all(("red" in out) == ("hair" in out) for out in dropped)
    assert any("red" not in out for out in dropped) and any("red" in out for out in dropped)
    assert caption("x;;;y", secondary_separator=";;;") == "x,y"


def test_wildcards_draw_every_choice_and_keep_escaped_braces():
    outs = {caption("a {red|green|blue} ball", seed, enable_wildcard=True) for seed in range(60)}
    assert outs == {"a red ball", "a green ball", "a blue ball"}
    assert caption("{{not}} {x}", 1, enable_wildcard=True) == "{not} x"
    assert caption("a {red|green} ball") == "a {red|green} ball"  # off: as written


def test_wildcards_pick_one_line_of_a_caption_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first line, x\nsecond line\n\nthird\n", encoding="utf-8")
    text = read_caption(str(path), keep_lines=True)
    assert text == "first line, x\nsecond line\nthird"
    assert read_caption(str(path)) == "first line, x, second line, third"  # one caption without wildcards
    outs = {caption(text, seed, enable_wildcard=True) for seed in range(40)}
    assert outs == {"first line, x", "second line", "third"}


def test_prefix_and_suffix_are_added_with_a_space_and_counted_by_keep_tokens():
    assert caption("a, b", caption_prefix="masterpiece,", caption_suffix=", end") == "masterpiece, a, b , end"
    outs = {caption("a, b, c, d", seed, shuffle_caption=True, keep_tokens=1, caption_prefix="pre,")
            for seed in range(20)}
    assert all(out.startswith("pre, ") for out in outs) and len(outs) > 1


def test_caption_dropout_every_n_epochs_empties_every_nth_epoch():
    got = [caption("a, b", 0, epoch=epoch, caption_dropout_every_n_epochs=3) for epoch in range(1, 8)]
    assert got == ["a, b", "a, b", "", "a, b", "a, b", "", "a, b"]
    assert caption("a, b", 0, epoch=0, caption_dropout_every_n_epochs=3) == "a, b"  # outside training


def test_token_warmup_counts_follow_kohyas_formula():
    tags = [f"t{i}" for i in range(10)]
    text = ", ".join(tags)
    options = dict(keep_tokens=1, token_warmup_min=2, token_warmup_step=30)
    for step in (0, 1, 7, 15, 29, 30, 100):
        out = caption(text, 0, step=step, **options).split(", ")
        flexible = 9  # one tag kept
        expected = flexible if step >= 30 else math.floor(step * (flexible - 2) / 30) + 2
        assert len(out) == 1 + expected, step
        assert out == tags[: 1 + expected]  # the first tags, in order (no shuffle)
    assert warmup_tag_count(9, 15, CaptionOptions(**options)) == 5


def test_token_warmup_step_below_one_is_a_fraction_of_the_run():
    config = TrainConfig(token_warmup_step=0.25)
    assert caption_options(config, total_steps=1000).token_warmup_step == 250
    assert caption_options(TrainConfig(token_warmup_step=40), total_steps=1000).token_warmup_step == 40


def test_options_off_leave_the_caption_and_the_random_draws_as_before():
    rng = random.Random(5)
    assert training_caption("a, b, c", CaptionOptions(), rng) == "a, b, c"
    assert rng.random() == random.Random(5).random()


def test_emphasis_weights_are_parsed_as_kohya_and_the_webui_do():
    parsed = parse_weights("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert [piece for piece, _ in parsed] == ["a ", "house", " ", "on", " a ", "hill", ", sun, ", "sky", "."]
    assert [round(w, 4) for _, w in parsed] == [1.0, 1.573, 1.1, 1.0, 1.1, 0.55, 1.1, 1.4641, 1.1]
    assert parse_weights(r"\(literal\]") == [("(literal]", 1.0)]
    ids, weights = weighted_token_ids("a (b:1.5) c", lambda text: [ord(ch) for ch in text if ch.strip()])
    assert ids == [ord("a"), ord("b"), ord("c")] and weights == [1.0, 1.5, 1.0]
    framed = chunk_weights([1.0, 1.5, 1.0], [3], 2)
    assert framed.shape == (2, 77) and framed[0, :5].tolist() == [1.0, 1.0, 1.5, 1.0, 1.0] and framed[1].eq(1).all()


@pytest.fixture(scope="module")
def tiny_bundle():
    from lib_trainer.hosts import load_bundle

    return load_bundle("tiny:sd1")


def test_weighted_captions_scale_the_words_hidden_states(tiny_bundle):
    import torch

    with torch.no_grad():
        plain = tiny_bundle.encode_prompts(["a red ball"]).context
        weighted = tiny_bundle.encode_weighted_prompts(["a (red:1.5) ball"]).context
        literal = tiny_bundle.encode_prompts(["a (red:1.5) ball"]).context
    position = 1 + len(tiny_bundle.token_ids("a"))  # after the start token and "a"
    assert torch.allclose(weighted[0, position], plain[0, position] * 1.5, atol=1e-5)
    others = [i for i in range(77) if i != position]
    assert torch.allclose(weighted[0, others], plain[0, others], atol=1e-5)
    assert not torch.allclose(literal, plain)  # off, the brackets are words of the caption


def test_weighted_captions_follow_long_captions_into_their_second_chunk(tiny_bundle):
    import torch

    words = " ".join(["cat"] * 80)
    with torch.no_grad():
        plain = tiny_bundle.encode_prompts([words + " dog"], 150).context
        weighted = tiny_bundle.encode_weighted_prompts([words + " (dog:2)"], 150).context
    # 81 tokens: 75 in the first chunk, 6 in the second (positions 77 + 1 .. 77 + 6)
    dog = 77 + 6
    assert torch.allclose(weighted[0, dog], plain[0, dog] * 2, atol=1e-5)
    assert torch.allclose(weighted[0, :dog], plain[0, :dog], atol=1e-5)


def test_weighted_captions_on_sdxl_weight_both_encoders():
    import torch

    from lib_trainer.hosts import load_bundle

    bundle = load_bundle("tiny:sdxl")
    with torch.no_grad():
        plain = bundle.encode_prompts(["a red ball"])
        weighted = bundle.encode_weighted_prompts(["a (red:0.5) ball"])
    assert torch.allclose(weighted.context[0, 2], plain.context[0, 2] * 0.5, atol=1e-5)
    assert torch.allclose(weighted.pooled, plain.pooled)  # as kohya: the pooled output is left as it is


def test_bad_combinations_are_refused():
    problems = TrainConfig(weighted_captions=True, cache_text_encoder_outputs=True,
                           network_train_unet_only=True).problems()
    assert any("weighted_captions cannot be used with cache_text_encoder_outputs" in p for p in problems)
    problems = TrainConfig(enable_wildcard=True, cache_text_encoder_outputs=True,
                           network_train_unet_only=True).problems()
    assert any("turn off enable_wildcard" in p for p in problems)
    problems = TrainConfig(keep_tokens_separator=",").problems()
    assert any("keep_tokens_separator" in p and "caption_separator" in p for p in problems)


def test_the_options_are_cli_flags_and_ui_fields():
    import argparse

    from lib_trainer.cli_args import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--keep_tokens_separator", "|||", "--enable_wildcard", "--caption_prefix", "pre",
                              "--token_warmup_step", "0.5", "--resize_interpolation", "bicubic", "--weighted_captions"])
    config = config_from_args(args)
    assert (config.keep_tokens_separator, config.enable_wildcard, config.caption_prefix, config.token_warmup_step,
            config.resize_interpolation, config.weighted_captions) == ("|||", True, "pre", 0.5, "bicubic", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--resize_interpolation", "sinc"])


CAPTION_IMAGE_OPTIONS = ("keep_tokens_separator", "secondary_separator", "enable_wildcard", "caption_prefix",
                         "caption_suffix", "caption_dropout_every_n_epochs", "token_warmup_min", "token_warmup_step",
                         "weighted_captions", "color_aug", "face_crop_aug_range", "resize_interpolation",
                         "alpha_mask", "masked_loss", "conditioning_data_dir")


def test_the_options_are_fields_of_the_dataset_accordion_and_read_back():
    import gradio as gr

    from lib_trainer.ui.form import ConfigForm

    form = ConfigForm()
    with gr.Blocks():
        form.build_expert(TrainConfig())
    assert set(CAPTION_IMAGE_OPTIONS) <= set(form.components)
    assert isinstance(form.components["resize_interpolation"], gr.Dropdown)
    values = {name: getattr(TrainConfig(), name) for name in form.components}
    values.update(caption_prefix="pre", resize_interpolation="nearest", color_aug=True, cache_latents=False)
    config, problems = form.read([values[name] for name in form.components])
    assert (config.caption_prefix, config.resize_interpolation, config.color_aug) == ("pre", "nearest", True)


def test_a_run_passes_its_step_and_epoch_to_the_captions(tmp_path):
    """Token warm-up grows with the steps and every 2nd epoch trains empty captions."""
    import os

    from conftest import quick_config
    from lib_trainer.demo_data import DEMO_FOLDER, make_demo_dataset
    from lib_trainer.hosts import load_bundle
    from lib_trainer.train.loop import train

    root = make_demo_dataset(str(tmp_path / "data"), count=2, size=64)
    os.rename(os.path.join(root, DEMO_FOLDER), os.path.join(root, "1_" + DEMO_FOLDER.split("_", 1)[1]))

    bundle = load_bundle("tiny:sd1")
    seen = []
    encode = bundle.encode_prompts
    bundle.encode_prompts = lambda prompts, length=75: seen.append(list(prompts)) or encode(prompts, length)
    config = quick_config(root, str(tmp_path / "out"), train_batch_size=2, max_train_steps=4, token_warmup_min=1,
                          token_warmup_step=4, caption_dropout_every_n_epochs=2, network_train_unet_only=True)
    train(config, bundle=bundle)
    counts = [{len(p.split(", ")) if p else 0 for p in prompts} for prompts in seen]
    # one step per epoch; the trigger word is kept, then floor(step * (4 - 1) / 4) + 1 of its 4 other tags
    assert counts == [{2}, {0}, {3}, {0}]
