"""Embedding runs in the WebUI (lib_trainer/webui/embeddings.py) against a stand-in of its
embedding database and prompt handling (webui_embedding_db.py) on a WebUI-shaped SD1 model."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from conftest import quick_config
from lib_trainer.progress import STEP, Progress
from test_webui_jobs import sd1_model, webui  # noqa: F401 (fixtures)
from webui_embedding_db import prompts_with_embeddings, vectors_with_lora

NAME = "ltemb"


@pytest.fixture
def embedding_webui(webui, sd1_model, monkeypatch):  # noqa: F811
    """The stand-in WebUI with sd1_model loaded and its prompt handling using the database."""
    webui.fake.shared.sd_model = sd1_model
    database = webui.fake.embedding_db  # its width is the tiny model's, not SD1's 768
    database.model_shape = database.expected_shape = \
        sd1_model.cond_stage_model.transformer.get_input_embeddings().weight.shape[1]
    monkeypatch.setattr(sd1_model.cond_stage_model, "forward",
                        prompts_with_embeddings(sd1_model.cond_stage_model, webui.fake.embedding_db))
    return webui


def embedding_run(webui, root, **changes):
    settings = dict(network_module="embedding", embedding_name=NAME, init_word="ball", num_vectors_per_token=2,
                    learning_rate=5e-2, max_train_steps=3, pretrained_model_name_or_path=webui.service.LOADED_MODEL)
    settings.update(changes)
    return quick_config(root, webui.service.lora_folder(), **settings)


def test_a_refresh_of_the_embeddings_list_while_training_does_not_stop_the_vectors_training(
        embedding_webui, small_root):
    """The Textual Inversion cards' Refresh (or the API's refresh-embeddings) reads the folders
    again, which drops the run's registered vectors; the next step must put them back, or the
    rest of the run trains nothing."""
    webui = embedding_webui
    database = webui.fake.embedding_db
    after_first = {}

    def refresh_after_step_one(event):
        if event.kind == STEP and event.done == 1 and not after_first:
            after_first["vectors"] = database.word_embeddings[NAME].vec.detach().clone()
            database.load_textual_inversion_embeddings(force_reload=True)

    webui.service.webui_trainer(embedding_run(webui, small_root), Progress([refresh_after_step_one]))
    final = load_file(os.path.join(webui.fake.shared.cmd_opts.embeddings_dir, NAME + ".safetensors"))["emb_params"]
    assert database.word_embeddings[NAME].filename.endswith(NAME + ".safetensors")  # the file's, after the run
    assert not torch.equal(final, after_first["vectors"])  # steps 2 and 3 trained the vectors


def test_each_pivotal_lora_gets_its_own_vectors_for_the_word_in_the_webui(embedding_webui, small_root):
    """The WebUI's Lora loader skips a bundled embedding whose name is in the embeddings folder:
    the run's own embedding files there must not carry the word, or every epoch's LoRA would get
    the last file's vectors."""
    webui = embedding_webui
    config = quick_config(small_root, webui.service.lora_folder(), pivotal_tuning=True, embedding_lr=5e-2,
                          num_vectors_per_token=2, max_train_steps=2, save_every_n_steps=1, output_name="ltpiv",
                          init_word="ball", pretrained_model_name_or_path=webui.service.LOADED_MODEL)
    webui.service.webui_trainer(config, Progress([]))
    loras = sorted(f for f in os.listdir(webui.service.lora_folder()) if f.endswith(".safetensors"))
    assert loras == ["ltpiv-step00000001.safetensors", "ltpiv.safetensors"]
    folder = webui.fake.shared.cmd_opts.embeddings_dir
    assert sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")) == loras  # named after each LoRA file
    word = config.trigger_word
    first, last = (load_file(os.path.join(webui.service.lora_folder(), lora))[f"bundle_emb.{word}.string_to_param.*"]
                   for lora in loras)
    assert not torch.equal(first, last)
    for lora, bundled in zip(loras, (first, last)):
        assert torch.equal(vectors_with_lora(webui.fake.embedding_db, os.path.join(webui.service.lora_folder(), lora),
                                             word), bundled)
        assert torch.equal(load_file(os.path.join(folder, lora))["emb_params"], bundled)


def test_after_a_run_the_webuis_cached_conditioning_is_gone(embedding_webui, small_root):
    """The WebUI reuses the last prompt's conditioning when the prompt is the same: the prompt
    with the name, written before the file existed, must not keep its old conditioning."""
    import webui_embedding_db as fake

    fake.StableDiffusionProcessing.cached_c = [("ltemb ball",), "conditioning without the embedding"]
    fake.StableDiffusionProcessingTxt2Img.cached_hr_c = [("ltemb ball",), "the same, for hires fix"]
    embedding_webui.service.webui_trainer(embedding_run(embedding_webui, small_root, max_train_steps=1), Progress([]))
    assert fake.StableDiffusionProcessing.cached_c == [None, None]
    assert fake.StableDiffusionProcessingTxt2Img.cached_hr_c == [None, None]
