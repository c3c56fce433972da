"""Sample images during training: the prompt file, when samples are due, the samplers'
math (against diffusers' schedulers), and short runs on the tiny models that write the
PNG files, with the prompt read back from them."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import quick_config
from lib_trainer.config import TrainConfig
from lib_trainer.demo_data import DEMO_FOLDER, make_demo_dataset
from lib_trainer.formats.lora_file import load_lora
from lib_trainer.hosts.bundle import scaled_linear_alphas_cumprod
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.networks.registry import create_network
from lib_trainer.progress import IMAGE, STATUS, Progress
from lib_trainer.train import samplers
from lib_trainer.train.loop import train
from lib_trainer.train.sample_prompts import SamplePrompt, SamplePromptError, parse_prompt_line, read_sample_prompts
from lib_trainer.train.sampling import SampleMaker, due_after_epoch, due_after_step, infotext, sample_path
from lib_trainer.train.txt2img import txt2img


def write_prompts(folder, text: str, name: str = "prompts.txt") -> str:
    path = os.path.join(str(folder), name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# --- the prompt file ---------------------------------------------------------------------

def test_every_option_of_a_prompt_line():
    line = "masterpiece, sks dog on a beach --n lowres, blurry --w 512 --h 768 --s 20 --l 7 --d 1234 --ss euler_a"
    assert parse_prompt_line(line) == SamplePrompt("masterpiece, sks dog on a beach", "lowres, blurry", 512, 768, 20,
                                                   7.0, 1234, "euler_a")


def test_a_plain_line_takes_kohyas_defaults():
    assert parse_prompt_line("  a red ball  ") == SamplePrompt("a red ball", "", 512, 512, 30, 7.5, None, None)


@pytest.mark.parametrize("line, expected", [
    ("a --W 100 --H 64", {"width": 96, "height": 64}),              # letters in either case; sizes down to x8
    ("a --l 6.5 --n", {"cfg_scale": 6.5, "negative_prompt": ""}),   # --n may be empty
    ("a--b -- c --d 0", {"prompt": "a--b -- c", "seed": 0}),        # only --letter starts an option
    ("--w 64 --n  two  words ", {"prompt": "", "width": 64, "negative_prompt": "two  words"}),
    ("a\t--s\t1000", {"steps": 1000}),
])
def test_prompt_line_details(line, expected):
    prompt = parse_prompt_line(line)
    assert {name: getattr(prompt, name) for name in expected} == expected


@pytest.mark.parametrize("line, fragment", [
    ("a --x 3", "unknown option --x (the options are --n --w --h --s --l --d --ss)"),
    ("a --g 3.5", "unknown option --g"),
    ("a --w 512px", "--w 512px: expected a whole number"),
    ("a --h 32", "--h 32: must be at least 64 pixels"),
    ("a --s 0", "--s 0: steps must be between 1 and 1000"),
    ("a --s 1001", "steps must be between 1 and 1000"),
    ("a --l -2", "--l -2: expected a number of 0 or more"),
    ("a --l high", "--l high: expected a number such as 7 or 7.5"),
    ("a --d -5", "--d -5: expected a whole number"),
    ("a --ss heun", "--ss heun: not a sampler available here: ddim, euler, euler_a"),
    ("a --w", "--w needs a value"),
    ("a --s 20 --s 30", "--s is given twice"),
])
def test_bad_options_say_what_is_wrong(line, fragment):
    with pytest.raises(ValueError) as error:
        parse_prompt_line(line)
    assert fragment in str(error.value)


def test_file_skips_comments_and_blanks_and_names_every_bad_line(tmp_path):
    good = write_prompts(tmp_path, "# my prompts\n\na red ball --d 5\n   \n  # indented comment\nblue cube --s 4\n")
    assert [p.prompt for p in read_sample_prompts(good)] == ["a red ball", "blue cube"]

    bad = write_prompts(tmp_path, "# header\nfine\n\na --w wide\nb --q 1\n", "bad.txt")
    with pytest.raises(SamplePromptError) as error:
        read_sample_prompts(bad)
    assert str(error.value).splitlines() == [f"{bad}, line 4: --w wide: expected a whole number",
                                             f"{bad}, line 5: unknown option --q (the options are --n --w --h --s "
                                             "--l --d --ss)"]


def test_unusable_prompt_files(tmp_path):
    with pytest.raises(SamplePromptError, match="does not exist"):
        read_sample_prompts(str(tmp_path / "missing.txt"))
    with pytest.raises(SamplePromptError, match=r"give a \.txt file .*\.toml and \.json prompt files are not read"):
        read_sample_prompts(write_prompts(tmp_path, "[prompt]\n", "prompts.toml"))
    with pytest.raises(SamplePromptError, match="holds no prompts"):
        read_sample_prompts(write_prompts(tmp_path, "# nothing\n\n", "empty.txt"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(SamplePromptError, match="is not UTF-8 text"):
        read_sample_prompts(str(latin1))


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffa red ball --d 3\n".encode("utf-8"))
    assert read_sample_prompts(str(path))[0].prompt == "a red ball"


# --- the samplers' math ------------------------------------------------------------------

_WEIGHTS = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))


def toy_model(x: torch.Tensor, t: float) -> torch.Tensor:
    """Some smooth function of the input and the timestep."""
    return torch.tanh(x) * 0.8 + _WEIGHTS * (float(t) / 1000)


def diffusers_reference(name: str, prediction_type: str, steps: int, seed: int) -> torch.Tensor:
    """The same sampler as diffusers writes it: DDIM with the WebUI's timesteps (leading, +1)
    ending at abar = 1; Euler (a) with k-diffusion's linspace timesteps."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    common = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  prediction_type=prediction_type)
    if name == "ddim":
        scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading",
                                  **common)
    else:
        kind = EulerAncestralDiscreteScheduler if name == "euler_a" else EulerDiscreteScheduler
        scheduler = kind(timestep_spacing="linspace", **common)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = toy_model(scheduler.scale_model_input(x, t), t)
        extra = {"generator": generator} if name == "euler_a" else {}
        x = scheduler.step(output, t, x, **extra).prev_sample
    return x


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name, steps", [("ddim", 5), ("euler", 4), ("euler_a", 4), ("euler", 7)])
def test_samplers_match_diffusers(name, steps, prediction_type):
    """With 4 steps every Euler timestep is a whole number (999, 666, 333, 0); with 7 they
    are fractional, where diffusers interpolates sigma and k-diffusion log sigma: nearly equal."""
    generator = torch.Generator().manual_seed(11)
    noise = torch.randn(1, 4, 8, 8, generator=generator)
    ours = samplers.SAMPLERS[name].run(toy_model, noise, scaled_linear_alphas_cumprod(), prediction_type, steps,
                                       generator)
    reference = diffusers_reference(name, prediction_type, steps, seed=11)
    scale = reference.abs().max()
    assert (ours - reference).abs().max() < 1e-5 * scale, (ours - reference).abs().max()


def abar_at(alphas_cumprod: torch.Tensor, t: float) -> float:
    """abar at a fractional timestep, log sigma interpolated linearly (written apart from samplers.py)."""
    log_sigmas = np.log(np.sqrt((1 - alphas_cumprod.double().numpy()) / alphas_cumprod.double().numpy()))
    sigma = float(np.exp(np.interp(t, np.arange(len(log_sigmas)), log_sigmas)))
    return 1 / (1 + sigma ** 2)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["ddim", "euler", "euler_a"])
def test_a_perfect_denoiser_leads_every_sampler_to_its_image(name, prediction_type):
    """If the model always answers with the true noise (or v) of one known x0, any sampler
    ends at exactly that x0, from any starting noise and in any number of steps."""
    alphas = scaled_linear_alphas_cumprod()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def oracle(x_t, t):
        abar = abar_at(alphas, t)
        eps = (x_t - abar ** 0.5 * x0) / (1 - abar) ** 0.5
        return eps if prediction_type == "epsilon" else abar ** 0.5 * eps - (1 - abar) ** 0.5 * x0

    generator = torch.Generator().manual_seed(2)
    for steps in (3, 10):
        noise = torch.randn(1, 4, 8, 8, generator=generator)
        result = samplers.SAMPLERS[name].run(oracle, noise, alphas, prediction_type, steps, generator)
        assert torch.allclose(result, x0, atol=1e-4), (steps, (result - x0).abs().max())


# --- config ------------------------------------------------------------------------------

def test_sampling_problems_say_what_to_fix(tmp_path):
    assert TrainConfig(sample_every_n_steps=10).problems() == [
        "sample images are on (sample_every_n_steps, sample_every_n_epochs or sample_at_first) but sample_prompts "
        "is empty: give a .txt file of prompts, or turn sampling off"]
    missing = str(tmp_path / "nope.txt")
    assert TrainConfig(sample_at_first=True, sample_prompts=missing).problems() == [
        f"sample_prompts={missing!r}: the prompt file does not exist"]
    bad = write_prompts(tmp_path, "a --s 0\n")
    assert TrainConfig(sample_every_n_epochs=1, sample_prompts=bad).problems() == [
        f"{bad}, line 1: --s 0: steps must be between 1 and 1000"]
    good = write_prompts(tmp_path, "a red ball\n", "good.txt")
    assert TrainConfig(sample_every_n_steps=5, sample_prompts=good, sample_sampler="dpmsolver++").problems() == [
        "sample_sampler='dpmsolver++' is an sd-scripts sampler this trainer cannot sample with; use one of: ddim, "
        "euler, euler_a, k_euler, k_euler_a"]
    assert "sample_sampler='foo' is not one of: ddim" in TrainConfig(sample_sampler="foo").problems()[0]


def test_an_sd_scripts_config_with_sampling_off_loads_whatever_its_sampler_and_prompts():
    config = TrainConfig(sample_sampler="heun", sample_prompts="somewhere/prompts.toml")
    assert config.problems() == []


def test_cli_flags_are_kohyas(tmp_path):
    import argparse

    from lib_trainer.cli_args import add_config_arguments, config_from_args

    prompts = write_prompts(tmp_path, "a red ball\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--sample_every_n_steps", "50", "--sample_every_n_epochs", "2", "--sample_at_first", "--sample_prompts",
         prompts, "--sample_sampler", "euler_a"]))
    assert (config.sample_every_n_steps, config.sample_every_n_epochs, config.sample_at_first,
            config.sample_prompts, config.sample_sampler) == (50, 2, True, prompts, "euler_a")
    assert config.problems() == []
    assert TrainConfig().sample_sampler == "ddim"


# --- images from the tiny models ---------------------------------------------------------

TINY_PROMPT = SamplePrompt("ltdemo, red ball", "blurry", width=64, height=96, steps=2, cfg_scale=5.0)


@pytest.mark.parametrize("sampler", ["ddim", "euler_a"])
def test_same_seed_same_image_other_seed_other_image(sampler):
    bundle = build_tiny_bundle("sd1")
    images = [txt2img(bundle, TINY_PROMPT, sampler, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert images[0].size == (64, 96) and images[0].mode == "RGB"
    assert np.array_equal(pixels(images[0]), pixels(images[1]))
    assert not np.array_equal(pixels(images[0]), pixels(images[2]))


def test_the_negative_prompt_counts_only_with_guidance():
    """Guidance is negative + scale * (positive - negative): at scale 1 only the prompt counts."""
    bundle = build_tiny_bundle("sd1")

    def image(negative, scale):
        prompt = SamplePrompt("ltdemo, red ball", negative, width=64, height=64, steps=2, cfg_scale=scale)
        return pixels(txt2img(bundle, prompt, "ddim", torch.Generator().manual_seed(3)))

    assert np.array_equal(image("blurry", 1.0), image("green cube", 1.0))
    assert not np.array_equal(image("blurry", 7.0), image("green cube", 7.0))


def test_sdxl_is_conditioned_on_the_sample_size():
    bundle = build_tiny_bundle("sdxl")
    seen = []
    predict = bundle.predict
    bundle.predict = lambda x, t, conditioning, sizes=None: seen.append(sizes) or predict(x, t, conditioning, sizes)
    image = txt2img(bundle, TINY_PROMPT, "euler", torch.Generator().manual_seed(0))
    assert image.size == (64, 96) and len(seen) == 2
    assert all(sizes.tolist() == [[96, 64, 0, 0, 96, 64]] * 2 for sizes in seen)


# --- when and where ----------------------------------------------------------------------

@pytest.mark.parametrize("every_steps, every_epochs, steps_due, epochs_due", [
    (0, 0, [], []),
    (2, 0, [2, 4, 6], []),
    (0, 2, [], [2, 4, 6]),
    (3, 2, [], [2, 4, 6]),   # as in sd-scripts, epochs win
])
def test_when_samples_are_due(every_steps, every_epochs, steps_due, epochs_due):
    config = TrainConfig(sample_every_n_steps=every_steps, sample_every_n_epochs=every_epochs)
    assert [n for n in range(1, 7) if due_after_step(config, n)] == steps_due
    assert [n for n in range(1, 7) if due_after_epoch(config, n)] == epochs_due


def test_file_names_and_infotext_are_kohyas_and_the_webuis():
    assert sample_path("out", "sls", "e000002", 1, 42) == os.path.join("out", "sample", "sls_e000002_01_42.png")
    prompt = SamplePrompt("sks dog", "lowres", 512, 768, 20, 7.0, 1234)
    assert infotext(prompt, "euler_a", 1234) == ("sks dog\nNegative prompt: lowres\n"
                                                 "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x768")
    assert infotext(SamplePrompt("cat"), "k_euler", 5) == (
        "cat\nSteps: 30, Sampler: Euler, CFG scale: 7.5, Seed: 5, Size: 512x512")


def test_sampling_leaves_modules_as_they_were_and_samples_in_eval_mode(tmp_path):
    bundle = build_tiny_bundle("sd1")
    config = TrainConfig(sample_every_n_steps=1, sample_prompts=write_prompts(tmp_path, "a --w 64 --h 64 --s 1\n"),
                         output_dir=str(tmp_path), output_name="t")
    network = create_network(config, bundle.target_layers(False))
    modules = [network, bundle.unet, *bundle.encoders, bundle.vae_model]
    network.train()
    bundle.unet.train()
    bundle.vae_model.encoder.train()  # a mixed state comes back mixed
    before = [[m.training for m in module.modules()] for module in modules]
    during = []
    progress = Progress([lambda e: during.append([m.training for m in modules]) if e.kind == IMAGE else None])
    with network.attached():
        SampleMaker(config, bundle, network, torch.device("cpu"), progress).after_step(1)
    assert during == [[False] * len(modules)]
    assert [[m.training for m in module.modules()] for module in modules] == before
    assert os.listdir(tmp_path / "sample") == ["t_000001_00_42.png"]


# --- whole runs --------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.images, self.messages = [], []

    def __call__(self, event):
        if event.kind == IMAGE:
            self.images.append((event.info["image"], event.text))
        elif event.kind == STATUS:
            self.messages.append(event.text)


def test_a_run_writes_samples_at_first_and_every_n_steps(small_root, tmp_path):
    prompts = write_prompts(tmp_path, "# samples\nltdemo, red ball --n blurry --w 64 --h 96 --s 2 --l 6 --d 1234\n\n"
                                      "ltdemo ball on grass --w 72 --h 64 --s 2 --ss euler_a\n")
    out = tmp_path / "out"
    recorder = Recorder()
    config = quick_config(small_root, str(out), max_train_steps=4, sample_every_n_steps=2, sample_at_first=True,
                          sample_prompts=prompts, sample_sampler="euler", learning_rate=5e-2)
    result = train(config, progress=Progress([recorder]))
    assert result.steps == 4 and not result.stopped_early

    names = ["test_e000000_00_1234.png", "test_e000000_01_8.png", "test_000002_00_1234.png", "test_000002_01_8.png",
             "test_000004_00_1234.png", "test_000004_01_8.png"]
    assert sorted(os.listdir(out / "sample")) == sorted(names)
    first = Image.open(out / "sample" / names[0])
    assert first.size == (64, 96)
    assert first.text["parameters"] == ("ltdemo, red ball\nNegative prompt: blurry\n"
                                        "Steps: 2, Sampler: Euler, CFG scale: 6, Seed: 1234, Size: 64x96")
    second = Image.open(out / "sample" / names[1])
    assert second.size == (72, 64)
    assert second.text["parameters"] == ("ltdemo ball on grass\n"
                                         "Steps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 8, Size: 72x64")

    assert [caption for _, caption in recorder.images] == [
        "before training, #0: ltdemo, red ball", "before training, #1: ltdemo ball on grass",
        "step 2, #0: ltdemo, red ball", "step 2, #1: ltdemo ball on grass",
        "step 4, #0: ltdemo, red ball", "step 4, #1: ltdemo ball on grass"]
    for (image, _), name in zip(recorder.images, names):
        assert np.array_equal(pixels(image), pixels(Image.open(out / "sample" / name).convert("RGB")))
    assert any(m.startswith("samples step 2: 2 of 2 written to") for m in recorder.messages)

    # Before training the LoRA is zero: the base model's image. After training it is not.
    bundle = build_tiny_bundle("sd1")
    base = txt2img(bundle, read_sample_prompts(prompts)[0], "euler", torch.Generator().manual_seed(1234))
    assert np.array_equal(pixels(base), pixels(recorder.images[0][0]))
    assert not np.array_equal(pixels(recorder.images[0][0]), pixels(recorder.images[4][0]))
    # And the trained file gives the last samples again.
    network = create_network(config, bundle.target_layers(False))
    network.load_file_state_dict(load_lora(result.final_path))
    with network.attached():
        again = txt2img(bundle, read_sample_prompts(prompts)[0], "euler", torch.Generator().manual_seed(1234))
    assert np.abs(pixels(again) - pixels(recorder.images[4][0])).max() <= 1


class ReseedingTxt2Img:
    """Wraps a bundle whose host's txt2img reseeds the global generators, as the WebUI's
    reseeds torch's from the sample's seed."""

    def __init__(self, bundle):
        self.bundle = bundle

    def __getattr__(self, name):
        return getattr(self.bundle, name)

    def sample_backend(self, prompt, sampler, seed):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        return txt2img(self.bundle, prompt, sampler, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("host_txt2img", [False, True], ids=["plain torch", "a host txt2img that reseeds"])
def test_sampling_does_not_change_what_is_trained(small_root, tmp_path, host_txt2img):
    """network_dropout and the VAE's latent sampling draw from torch's global generator while
    training: a sample round that moved it would change the weights."""
    prompts = write_prompts(tmp_path, "ltdemo --w 64 --h 64 --s 1\n")
    common = dict(network_dropout=0.1, cache_latents=False)
    plain = train(quick_config(small_root, str(tmp_path / "a"), **common))
    bundle = build_tiny_bundle()
    sampled = train(quick_config(small_root, str(tmp_path / "b"), sample_every_n_steps=1, sample_at_first=True,
                                 sample_prompts=prompts, sample_sampler="euler_a", **common),
                    bundle=ReseedingTxt2Img(bundle) if host_txt2img else bundle)
    first, second = load_lora(plain.final_path), load_lora(sampled.final_path)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert len(os.listdir(tmp_path / "b" / "sample")) == 5


def test_epoch_samples_come_after_every_nth_epoch_including_the_last(tmp_path):
    root = make_demo_dataset(str(tmp_path / "data"), count=2, size=64)
    os.rename(os.path.join(root, DEMO_FOLDER), os.path.join(root, "1_ltdemo ball"))  # one step per epoch
    recorder = Recorder()
    config = quick_config(root, str(tmp_path / "out"), max_train_steps=0, max_train_epochs=4, sample_every_n_epochs=2,
                          sample_every_n_steps=1, sample_prompts=write_prompts(tmp_path, "ltdemo --w 64 --h 64 --s 1"))
    assert train(config, progress=Progress([recorder])).steps == 4
    assert sorted(os.listdir(tmp_path / "out" / "sample")) == ["test_e000002_00_7.png", "test_e000004_00_7.png"]
    assert any("sample_every_n_steps is ignored" in m for m in recorder.messages)


class FailingSamples:
    """Wraps a bundle whose host's txt2img raises."""

    def __init__(self, bundle):
        self.bundle = bundle

    def __getattr__(self, name):
        return getattr(self.bundle, name)

    def sample_backend(self, prompt, sampler, seed):
        raise RuntimeError("simulated out of memory while sampling")


def test_a_failed_sample_is_reported_and_training_goes_on(small_root, tmp_path):
    recorder = Recorder()
    config = quick_config(small_root, str(tmp_path), sample_every_n_steps=2,
                          sample_prompts=write_prompts(tmp_path, "ltdemo --w 64 --h 64 --s 1\n"))
    result = train(config, bundle=FailingSamples(build_tiny_bundle()), progress=Progress([recorder]))
    assert result.steps == 4 and os.path.isfile(result.final_path)
    failures = [m for m in recorder.messages if m.startswith("sample 0")]
    assert failures == ["sample 0 (step 2) failed, training goes on: RuntimeError: simulated out of memory while "
                        "sampling", "sample 0 (step 4) failed, training goes on: RuntimeError: simulated out of "
                        "memory while sampling"]
    assert not os.path.exists(tmp_path / "sample") or not os.listdir(tmp_path / "sample")


def test_v_prediction_samples_in_mixed_precision(small_root, tmp_path):
    prompts = write_prompts(tmp_path, "ltdemo --w 64 --h 64 --s 2\n")
    config = quick_config(small_root, str(tmp_path), pretrained_model_name_or_path="tiny:sd2", max_train_steps=2,
                          mixed_precision="bf16", sample_every_n_steps=2, sample_prompts=prompts)
    recorder = Recorder()
    train(config, progress=Progress([recorder]))
    assert os.listdir(tmp_path / "sample") == ["test_000002_00_7.png"]
    image = pixels(recorder.images[0][0])
    assert image.shape == (64, 64, 3) and image.std() > 0
