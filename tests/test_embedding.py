"""Textual-inversion embeddings on tiny models of every family: the files are the WebUI's
layouts (read here from the format's description, and applied by diffusers' own textual-
inversion loader), applying a file reproduces the training-time conditioning and UNet output,
only the new vectors train, the model comes back exactly after a run that ends, fails or
stops, and a stopped run resumes to the same vectors."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from conftest import diffusers_pipeline, encoded_examples, quick_config
from denoising_score import fixed_denoising_loss
from lib_trainer.config import ConfigError
from lib_trainer.demo_data import make_demo_dataset
from lib_trainer.errors import InvalidInput
from lib_trainer.hosts.prompt_chunks import split_with_embeddings
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.progress import STEP, Progress
from lib_trainer.train import loop
from lib_trainer.train.loop import train

WIDTHS = {"sd1": [64], "sd2": [64], "sdxl": [32, 64]}  # the tiny models' token-embedding widths
PROMPT = "ltemb, red ball, simple background"


def embedding_config(root, out, family="sd1", **changes):
    settings = dict(pretrained_model_name_or_path=f"tiny:{family}", network_module="embedding",
                    embedding_name="ltemb", init_word="red ball", num_vectors_per_token=3, learning_rate=5e-3)
    settings.update(changes)
    return quick_config(root, str(out), **settings)


def read_safetensors(path):
    """The header and tensors of a .safetensors file, read from its layout: 8 bytes of little-
    endian header length, a JSON header (name -> dtype, shape, data offsets; __metadata__), data."""
    with open(path, "rb") as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(length))
        data = handle.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32", "an embedding is stored in fp32, as the WebUI stores it"
        start, end = entry["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32).reshape(entry["shape"])
    return header.get("__metadata__", {}), tensors


def captured_trainable(monkeypatch):
    """The loop's trainable, kept for looking at after the run."""
    kept = []
    original = loop.create_trainable

    def create(config, bundle):
        kept.append(original(config, bundle))
        return kept[-1]

    monkeypatch.setattr(loop, "create_trainable", create)
    return kept


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def trained(request, tmp_path_factory):
    """One short run per family: its result, its trained Embedding and the bundle it trained on."""
    family = request.param
    root = make_demo_dataset(str(tmp_path_factory.mktemp("data")), count=4, size=64)
    out = tmp_path_factory.mktemp(f"emb_{family}")
    bundle = build_tiny_bundle(family)
    monkeypatch = pytest.MonkeyPatch()
    kept = captured_trainable(monkeypatch)
    try:
        result = train(embedding_config(root, out, family, max_train_steps=4, save_every_n_steps=2), bundle=bundle)
    finally:
        monkeypatch.undo()
    return {"family": family, "result": result, "embedding": kept[0], "bundle": bundle, "root": root}


def test_the_safetensors_file_is_the_webuis_layout(trained):
    family, result = trained["family"], trained["result"]
    assert [os.path.basename(p) for p in result.saved] == ["ltemb-step00000002.safetensors", "ltemb.safetensors"]
    metadata, tensors = read_safetensors(result.final_path)
    expected = {"clip_l": [3, 32], "clip_g": [3, 64]} if family == "sdxl" else {"emb_params": [3, 64]}
    assert {k: list(v.shape) for k, v in tensors.items()} == expected
    assert metadata["name"] == "ltemb" and metadata["step"] == "4"
    assert metadata["sd_checkpoint_name"] == f"tiny-{family}" and "sd_checkpoint" in metadata
    assert metadata["ss_network_module"] == "embedding"
    trained_vectors = [v.detach() for v in trained["embedding"].vectors]
    for stored, vectors in zip(tensors.values() if family != "sdxl" else (tensors["clip_l"], tensors["clip_g"]),
                               trained_vectors):
        assert torch.equal(stored, vectors)


def test_applying_the_file_reproduces_the_training_conditioning_and_unet_output(trained):
    """diffusers' textual-inversion loader (independent of our code) applies the saved vectors."""
    family, bundle = trained["family"], trained["bundle"]
    _, tensors = read_safetensors(trained["result"].final_path)
    with torch.no_grad(), trained["embedding"].attached(bundle):
        during = bundle.encode_prompts([PROMPT])
    fresh = build_tiny_bundle(family)
    pipe = diffusers_pipeline(fresh.components)
    if family == "sdxl":
        pipe.load_textual_inversion({"ltemb": tensors["clip_l"]}, token="ltemb", text_encoder=pipe.text_encoder,
                                    tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion({"ltemb": tensors["clip_g"]}, token="ltemb", text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
        with torch.no_grad():
            context, _, pooled, _ = pipe.encode_prompt([PROMPT], device="cpu", num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
    else:
        pipe.load_textual_inversion(trained["result"].final_path, token="ltemb")
        with torch.no_grad():
            context, _ = pipe.encode_prompt([PROMPT], "cpu", 1, False)
        pooled = None
    assert (context - during.context).norm() / during.context.norm() < 1e-5
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    steps = torch.tensor([500])
    with torch.no_grad():
        expected = bundle.predict(latents, steps, during)
        applied = bundle.predict(latents, steps, type(during)(context, pooled))
    assert (applied - expected).norm() / expected.norm() < 1e-5
    # and the embedding matters: without it, the name is plain text
    with torch.no_grad():
        plain = bundle.encode_prompts([PROMPT]).context
    assert not torch.allclose(plain, during.context)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_the_pt_file_is_the_webuis_layout_and_loads_weights_only(small_root, tmp_path, family):
    result = train(embedding_config(small_root, tmp_path, family, embedding_format="pt", max_train_steps=1))
    assert result.final_path.endswith("ltemb.pt")
    data = torch.load(result.final_path, weights_only=True)
    if family == "sdxl":
        # The WebUI reads every entry of an SDXL .pt as a tensor: nothing else may be in it.
        assert set(data) == {"clip_l", "clip_g"}
        assert list(data["clip_l"].shape) == [3, 32] and list(data["clip_g"].shape) == [3, 64]
        return
    # and our training metadata (what the comparison lists), in a key the WebUI's loader never reads
    assert set(data) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint",
                         "sd_checkpoint_name", "lib_trainer_metadata"}
    assert list(data["string_to_token"]) == ["*"] and isinstance(data["string_to_token"]["*"], int)
    assert list(data["string_to_param"]) == ["*"] and list(data["string_to_param"]["*"].shape) == [3, 64]
    assert data["name"] == "ltemb" and data["step"] == 1 and data["sd_checkpoint_name"] == "tiny-sd1"


def test_initial_vectors_are_the_init_words_tokens_repeated_or_cut(small_root, tmp_path):
    from lib_trainer.networks.embedding import initial_vectors

    bundle = build_tiny_bundle("sdxl")
    words = bundle.token_vectors("red ball")
    assert [list(w.shape) for w in words] == [[2, 32], [2, 64]]
    three = initial_vectors(bundle, "red ball", 3)
    assert all(torch.equal(v, torch.cat([w, w[:1]])) for v, w in zip(three, words))
    one = initial_vectors(bundle, "red ball", 1)
    assert all(torch.equal(v, w[:1]) for v, w in zip(one, words))
    assert all(not v.any() for v in initial_vectors(bundle, "*", 2))


def _model_state(bundle):
    modules = (bundle.unet, *bundle.encoders, bundle.vae_model)
    return ([{k: v.clone() for k, v in m.state_dict().items()} for m in modules],
            [{n: p.requires_grad for n, p in m.named_parameters()} for m in modules],
            [[sub.training for sub in m.modules()] for m in modules],
            [[(len(sub._forward_hooks), len(sub._forward_pre_hooks)) for sub in m.modules()] for m in modules])


def _assert_same(bundle, before):
    after = _model_state(bundle)
    for state, again in zip(before[0], after[0]):
        assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state), \
            "every weight (every other token's vector too) is bit-identical"
    assert before[1:] == after[1:], "requires_grad, modes and hooks are as before"
    assert not bundle.embeddings.vectors, "the prompt embeddings are as before"


class FailingBundle:
    """A bundle whose prediction raises from the `at`-th call on."""

    def __init__(self, bundle, at):
        self.bundle, self.at, self.calls = bundle, at, 0

    def __getattr__(self, name):
        return getattr(self.bundle, name)

    def predict(self, *args):
        self.calls += 1
        if self.calls >= self.at:
            raise RuntimeError("simulated failure")
        return self.bundle.predict(*args)


@pytest.mark.parametrize("ending", ["done", "failed", "stopped"])
def test_only_the_new_vectors_train_and_the_model_comes_back_exactly(small_root, tmp_path, ending):
    bundle = build_tiny_bundle("sdxl")
    with torch.no_grad():  # transformers installs its hidden-state hooks at the first use, for good
        bundle.encode_prompts([PROMPT])
    before = _model_state(bundle)
    config = embedding_config(small_root, tmp_path, "sdxl", max_train_steps=4, gradient_checkpointing=True)
    progress = Progress()
    if ending == "stopped":
        progress.sinks.append(lambda e: e.kind == STEP and e.label == "training" and e.done == 2 and progress.commands.request_stop())
    if ending == "failed":
        with pytest.raises(RuntimeError, match="simulated failure"):
            train(config, bundle=FailingBundle(bundle, 3), progress=progress)
    else:
        result = train(config, bundle=bundle, progress=progress)
        assert result.stopped_early == (ending == "stopped")
    _assert_same(bundle, before)
    saved = sorted(os.listdir(tmp_path))
    assert any(name.endswith(".safetensors") for name in saved), saved


def test_the_loss_falls_on_the_demo_concept(small_root, tmp_path):
    """An embedding only moves the conditioning, and the random tiny UNet barely listens to its
    text (the whole of what 15 steps can win here is a fraction of a percent, against 15% for
    a LoRA that changes the UNet itself): the loss on noise the run never drew still falls,
    at low and at high noise."""
    config = embedding_config(small_root, tmp_path, init_word="*", num_vectors_per_token=4, learning_rate=1e-2,
                              max_train_steps=0, max_train_epochs=3, train_batch_size=8)
    result = train(config)
    bundle = build_tiny_bundle()
    latents, captions = encoded_examples(bundle, result.plan.training_set.examples[:4])
    prompts = [caption.replace(config.trigger_word, "ltemb") for caption in captions]
    from lib_trainer.formats.embedding_file import load_embedding

    _, vectors, _ = load_embedding(result.final_path)
    for timesteps in ([100, 400, 700], [800, 900, 950]):
        scores = {}
        for label, used in (("start", [torch.zeros_like(vectors[0])]), ("trained", vectors)):
            with bundle.prompt_embeddings({"ltemb": used}):
                scores[label] = fixed_denoising_loss(bundle, latents, prompts, 1234, timesteps)
        assert scores["trained"] < scores["start"], (timesteps, scores)


def _resume_config(root, out, **changes):
    return embedding_config(root, out, max_train_steps=0, max_train_epochs=2, shuffle_caption=True,
                            embedding_template="subject_filewords", flip_aug=True, **changes)


def test_a_stopped_embedding_run_resumes_to_the_same_vectors(small_root, tmp_path):
    whole = train(_resume_config(small_root, tmp_path / "whole"))
    progress = Progress()
    progress.sinks.append(lambda e: e.kind == STEP and e.label == "training" and e.done == 3 and progress.commands.request_stop())
    stopped = train(_resume_config(small_root, tmp_path / "part"), progress=progress)
    assert stopped.stopped_early and stopped.steps == 3
    resumed = train(_resume_config(small_root, tmp_path / "part",
                                   resume=str(tmp_path / "part" / "ltemb-step00000003-state")))
    assert resumed.steps == whole.steps
    _, expected = read_safetensors(whole.final_path)
    _, got = read_safetensors(resumed.final_path)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.losses == pytest.approx(whole.losses, abs=0, rel=0)
    other = train(_resume_config(small_root, tmp_path / "other", seed=8))
    assert not torch.equal(read_safetensors(other.final_path)[1]["emb_params"], expected["emb_params"])


def test_an_embedding_never_straddles_two_chunks():
    find = lambda tokens, position: ("emb", 1, 4) if tokens[position] == 99 else None  # noqa: E731
    chunks, fixes = split_with_embeddings([5] * 73 + [99, 6], comma_id=7, max_chunks=3, find_embedding=find)
    assert [len(c) for c in chunks] == [73, 5] and fixes == [(1, 0, "emb")]
    assert chunks[1] == [0, 0, 0, 0, 6]
    chunks, fixes = split_with_embeddings([5] * 70 + [99, 6], comma_id=7, max_chunks=3, find_embedding=find)
    assert fixes == [(0, 70, "emb")] and len(chunks[0]) == 75


def test_an_existing_name_is_refused_unless_overwrite(small_root, tmp_path):
    existing = tmp_path / "ltemb.pt"
    existing.write_bytes(b"someone's embedding")
    with pytest.raises(InvalidInput, match=r"'ltemb' already exists: .*ltemb\.pt.*embedding_overwrite"):
        train(embedding_config(small_root, tmp_path, max_train_steps=1))
    assert existing.read_bytes() == b"someone's embedding"
    train(embedding_config(small_root, tmp_path, max_train_steps=1, embedding_overwrite=True))
    assert (tmp_path / "ltemb.safetensors").exists()


def test_bad_embedding_settings_are_config_problems(tmp_path):
    base = dict(network_module="embedding", embedding_name="ltemb")
    assert any("cache_text_encoder_outputs" in p for p in quick_config(
        "", str(tmp_path), cache_text_encoder_outputs=True, network_train_unet_only=True, **base).problems())
    assert any("embedding_template" in p for p in quick_config(
        "", str(tmp_path), embedding_template="nonsense", **base).problems())
    assert any("no dots" in p for p in quick_config("", str(tmp_path), network_module="embedding",
                                                     embedding_name="a.b").problems())
    assert any("num_vectors_per_token=76" in p for p in quick_config(
        "", str(tmp_path), num_vectors_per_token=76, **base).problems())
    with pytest.raises(ConfigError):
        quick_config("", str(tmp_path), **base).replace(embedding_format="bin")
        quick_config("", str(tmp_path), embedding_format="bin", **base).validate()


def test_the_cli_takes_the_webui_and_sd_scripts_names(tmp_path):
    import argparse

    from lib_trainer.cli_args import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--network_module", "embedding", "--embedding_name", "myword", "--init_text", "a cat",
         "--num_vectors_per_token", "4", "--template", "style", "--token_string", "sks"]))
    assert (config.init_word, config.embedding_template, config.num_vectors_per_token, config.token_string) == \
        ("a cat", "style", 4, "sks")


def test_captions_and_templates_name_the_embedding():
    import random

    from lib_trainer.dataset.embedding_prompts import EmbeddingPrompts, TEMPLATES

    captions = EmbeddingPrompts("ltemb", "ltdemo", None)
    assert captions("ltdemo, red ball", None) == "ltemb, red ball"
    assert captions("red ball", None) == "ltemb, red ball"
    template = EmbeddingPrompts("ltemb", "ltdemo", TEMPLATES["subject_filewords"])
    prompt = template("ltdemo, red ball", random.Random(1))
    assert "ltemb" in prompt and prompt.endswith(", red ball") and "ltdemo" not in prompt


def test_the_live_model_outside_the_webui_refuses_clearly(tmp_path):
    from lib_trainer.hosts.ldm_bundle import LiveSDBundle, UnsupportedModel
    from webui_models import webui_model

    live = LiveSDBundle(webui_model("sd1", tmp_path)[0])
    assert live.embedding_widths() == [64]
    with pytest.raises(UnsupportedModel, match="needs the WebUI's prompt handling"):
        live.prompt_embeddings({"x": [torch.zeros(1, 64)]})


def test_the_ui_lists_embedding_types_and_the_estimate_counts_vectors(tmp_path):
    from lib_trainer.networks import registry

    types = registry.ui_network_types()
    assert types["Embedding"]["network_module"] == "embedding"
    assert types["Embedding + LoRA (pivotal)"]["pivotal_tuning"] is True
    assert types["LoRA"]["pivotal_tuning"] is False, "choosing LoRA after the pivotal entry turns it off"
    assert registry.ui_network_type_of({"network_module": "embedding"}) == "Embedding"
    assert registry.ui_network_type_of({"network_module": "networks.lora", "conv_dim": 0,
                                        "pivotal_tuning": True}) == "Embedding + LoRA (pivotal)"
    assert registry.ui_network_type_of({"network_module": "networks.lora", "conv_dim": 0,
                                        "pivotal_tuning": False}) == "LoRA"
    bundle = build_tiny_bundle("sdxl")
    config = embedding_config("", tmp_path, "sdxl", num_vectors_per_token=3)
    assert registry.trainable_parameter_count(config, bundle) == 3 * (32 + 64)
