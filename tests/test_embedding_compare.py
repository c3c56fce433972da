"""Embedding files in the comparison: listed with their run (the embedding's word), epoch and
loss; a grid with one column per file (its name in place of the word) plus the prompt without
the word, one row per prompt; a cell equals generating with that file applied directly; a
pivotal LoRA's cells apply its bundled embedding; the CLI, the WebUI's cells and the Compare
sub-tab's folders."""
from __future__ import annotations

import os
import shutil
import types

import gradio as gr
import pytest
import torch
from PIL import ImageChops

from conftest import quick_config
from lib_trainer.__main__ import main
from lib_trainer.compare.defaults import run_defaults
from lib_trainer.compare.grid import GridRequest, read_grid_record
from lib_trainer.compare.runs import run_files, saved_files
from lib_trainer.compare.standalone import standalone_grid
from lib_trainer.config import TrainConfig
from lib_trainer.errors import InvalidInput
from lib_trainer.formats.embedding_file import METADATA_KEY, load_embedding, save_embedding
from lib_trainer.formats.lora_file import load_lora, read_metadata, save_lora
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.jobs import LocalTrainService, TrainQueue
from lib_trainer.progress import Progress
from lib_trainer.train.sample_prompts import SamplePrompt
from lib_trainer.train.sampling import eval_mode
from lib_trainer.train.loop import train
from lib_trainer.train.txt2img import txt2img
from lib_trainer.ui.compare_tab import CompareTab
import test_webui_jobs
from test_compare_service import txt2img as webui_txt2img  # noqa: F401  (fixture)

webui = test_webui_jobs.webui  # the fixture with stand-ins for the WebUI's modules
PROMPT = "ltemb, red ball"


def embedding_run(root, folder, **changes):
    settings = dict(network_module="embedding", embedding_name="ltemb", init_word="red ball",
                    num_vectors_per_token=2, learning_rate=5e-2, max_train_steps=0, max_train_epochs=2,
                    save_every_n_epochs=1, train_batch_size=8)
    settings.update(changes)
    return train(quick_config(root, str(folder), **settings))


@pytest.fixture(scope="module")
def emb_run(tmp_path_factory, small_root) -> str:
    folder = tmp_path_factory.mktemp("emb_run")
    embedding_run(small_root, folder)
    return str(folder)


def test_embedding_files_are_listed_by_run_epoch_and_loss(emb_run):
    files = saved_files(emb_run)
    assert [(f.name, f.label, f.is_embedding, f.is_hypernetwork) for f in files] == [
        ("ltemb-000001", "ltemb epoch 1", True, False), ("ltemb", "ltemb epoch 2 (final)", True, False)]
    assert all(f.average_loss is not None for f in files)
    defaults = run_defaults(files)
    assert defaults.prompt.split(", ")[0] == "ltemb" and "smile" in defaults.prompt  # its name, as it trained
    assert defaults.weights == "1" and defaults.model == "tiny:sd1"


def test_a_pt_embedding_carries_its_metadata_where_the_webui_does_not_look(small_root, tmp_path):
    embedding_run(small_root, tmp_path, embedding_format="pt", max_train_epochs=1)
    data = torch.load(tmp_path / "ltemb.pt", weights_only=True)
    assert set(data) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint",
                         "sd_checkpoint_name", METADATA_KEY}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in data[METADATA_KEY].items())
    [saved] = saved_files(str(tmp_path))
    assert (saved.label, saved.epoch, saved.is_embedding) == ("ltemb epoch 1 (final)", 1, True)
    assert saved.average_loss is not None


def test_an_sdxl_pt_embedding_without_metadata_is_read_by_its_name(tmp_path):
    for name in ("xlemb-000003", "xlemb"):
        save_embedding(str(tmp_path / f"{name}.pt"), "xlemb", [torch.zeros(2, 32), torch.zeros(2, 64)], 5, None, None)
    assert [(f.name, f.run, f.epoch, f.is_embedding) for f in saved_files(str(tmp_path))] == [
        ("xlemb-000003", "xlemb", 3, True), ("xlemb", "xlemb", None, True)]


def test_the_cli_grid_has_a_column_per_file_and_a_row_per_prompt(emb_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["compare", "--run", emb_run, "--prompt", PROMPT, "--prompt", "ltemb on grass", "--weights",
                 "0.5,1", "--steps", "2", "--sampler", "euler", "--size", "64x64", "--out", str(out)]) == 0
    record = read_grid_record(str(out))
    assert record["columns"] == ["None (prompt without ltemb)", "ltemb epoch 1", "ltemb epoch 2 (final)"]
    assert record["rows"] == ["prompt 1", "prompt 2"]
    prompts = {(c["row"], c["column"]): c["infotext"].split("\n")[0] for c in record["cells"]}
    assert prompts == {(0, 0): "red ball", (0, 1): "ltemb-000001, red ball", (0, 2): PROMPT,
                       (1, 0): "on grass", (1, 1): "ltemb-000001 on grass", (1, 2): "ltemb on grass"}
    assert capsys.readouterr().err.count("weights do not apply to an embedding") == 1


def test_a_cell_equals_generating_with_the_file_applied_directly(emb_run):
    first, final = saved_files(emb_run)
    bundle = build_tiny_bundle("sd1")
    request = GridRequest(files=[None, first, final], prompts=[PROMPT], steps=2, sampler="euler", width=64,
                          height=64, seed=4)
    grid = standalone_grid(request, bundle, Progress(), device="cpu")
    settings = SamplePrompt(PROMPT, "", 64, 64, 2, 7.0)
    with torch.no_grad(), bundle.frozen_for_training(torch.device("cpu"), torch.float32), \
            eval_mode(bundle.modules()), bundle.prompt_embeddings({"ltemb": load_embedding(first.path)[1]}):
        direct = txt2img(bundle, settings, "euler", torch.Generator().manual_seed(4))
    assert ImageChops.difference(grid.cell(0, 1).image, direct).getbbox() is None
    assert ImageChops.difference(grid.cell(0, 0).image, grid.cell(0, 1).image).getbbox() is not None
    assert ImageChops.difference(grid.cell(0, 1).image, grid.cell(0, 2).image).getbbox() is not None
    assert grid.cell(0, 1).infotext.startswith("ltemb-000001, red ball\n")


def test_a_grid_refuses_a_prompt_without_the_word_and_a_mix_with_loras(emb_run, compare_run):
    files = saved_files(emb_run)
    with pytest.raises(InvalidInput, match="does not say the embedding's word 'ltemb'"):
        GridRequest(files=files, prompts=["red ball"]).checked()
    lora = run_files(compare_run["folder"], "cmp")[-1]
    with pytest.raises(InvalidInput, match="embedding files .and None. only"):
        GridRequest(files=[*files, lora], prompts=[PROMPT]).checked()


def test_a_pivotal_loras_cells_apply_its_bundled_embedding(small_root, tmp_path):
    folder = tmp_path / "piv"
    train(quick_config(small_root, str(folder), output_name="piv", pivotal_tuning=True, embedding_name="ltpiv",
                       embedding_lr=5e-2, num_vectors_per_token=2, max_train_steps=2))
    path = folder / "piv.safetensors"
    state = load_lora(str(path))
    assert any(key.startswith("bundle_emb.ltpiv.") for key in state)
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    save_lora(str(stripped / "piv.safetensors"), {k: v for k, v in state.items() if not k.startswith("bundle_emb.")},
              read_metadata(str(path)))
    lora = next(f for f in saved_files(str(folder)) if f.name == "piv" and not f.is_embedding)
    bare = saved_files(str(stripped))[0]
    bundle = build_tiny_bundle("sd1")
    prompt = "ltpiv, red ball"
    with_bundle = standalone_grid(GridRequest(files=[lora], prompts=[prompt], steps=2, width=64, height=64),
                                  bundle, Progress(), device="cpu")
    without = standalone_grid(GridRequest(files=[bare], prompts=[prompt], steps=2, width=64, height=64),
                              bundle, Progress(), device="cpu")
    assert ImageChops.difference(with_bundle.cell(0, 0).image, without.cell(0, 0).image).getbbox() is not None
    # the embedding file the run wrote beside it is a run of its word, compared on its own
    assert [f.name for f in saved_files(str(folder)) if f.is_embedding] == ["ltpiv"]


def test_webui_cells_name_the_file_after_reloading_the_embedding_database(webui, webui_txt2img, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir(exist_ok=True)
    for name, epoch in (("ltemb-000001", 1), ("ltemb", 2)):
        save_embedding(str(folder / f"{name}.safetensors"), "ltemb", [torch.ones(2, 768) * epoch], epoch, None, None,
                       {"ss_output_name": "ltemb", "ss_epoch": str(epoch), "ss_steps": str(epoch)})
    files = saved_files(str(folder))
    service = webui.service.WebUITrainService(TrainQueue(None))
    grid = service.compare(GridRequest(files=[None, *files], prompts=[PROMPT], weights=[0.5, 1.0]), Progress())
    assert webui_txt2img.prompts == ["red ball", "ltemb-000001, red ball", PROMPT]
    assert set(webui.fake.embedding_db.word_embeddings) >= {"ltemb-000001", "ltemb"}
    assert grid.cell(0, 1).infotext.startswith("ltemb-000001, red ball\n") and len(grid.rows) == 1
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    save_embedding(str(folder / "ltnarrow.safetensors"), "ltnarrow", [torch.ones(2, 64)], 1, None, None)
    shutil.move(str(folder / "ltnarrow.safetensors"), str(narrow / "ltnarrow.safetensors"))
    with pytest.raises(InvalidInput, match="ltnarrow: not among the WebUI's embeddings"):
        service.compare(GridRequest(files=saved_files(str(narrow)), prompts=["ltnarrow"]), Progress())


def test_the_webui_sub_tab_offers_the_lora_embeddings_and_hypernetworks_folders(webui, tmp_path):
    service = webui.service.WebUITrainService(TrainQueue(None))
    folders = service.compare_folders(str(tmp_path / "Lora"))
    assert folders == [str(tmp_path / "Lora"), str(tmp_path / "embeddings"),
                       os.path.join(str(tmp_path / "models"), "hypernetworks")]


def test_the_sub_tab_lists_embedding_and_hypernetwork_runs(emb_run, small_root, tmp_path):
    hyper = tmp_path / "hypernetworks"
    train(quick_config(small_root, str(hyper), output_name="hn", network_module="hypernetwork", max_train_steps=1,
                       train_batch_size=1))
    with gr.Blocks():
        tab = CompareTab(LocalTrainService(TrainQueue(None)), TrainConfig(output_dir=emb_run,
                                                                          pretrained_model_name_or_path="tiny:sd1"))
        tab.build()
        tab.wire()
    assert tab.folders == [emb_run]
    _, runs, files, _ = tab.refresh_runs(emb_run, None)
    assert runs["choices"] == ["ltemb"] and len(files["value"]) == 3
    message, files, _, _, prompt, width, height, model, weights = tab.choose_run(emb_run, "ltemb")
    assert prompt.startswith("ltemb, ") and weights == "1" and (width, height) == (64, 64)
    _, runs, files, keep = tab.refresh_runs(str(hyper), None)
    assert runs["choices"] == ["hn"] and keep["value"].startswith("hn epoch 1 (final)")


def test_compare_when_done_finds_an_embedding_run_where_its_files_went(emb_run, tmp_path):
    """The host may save an embedding elsewhere (the WebUI's embeddings folder), named by its word."""
    elsewhere = tmp_path / "embeddings"

    def trainer(config, progress):
        shutil.copytree(emb_run, elsewhere, copy_function=shutil.copyfile)  # new files: this run's
        return types.SimpleNamespace(final_path=str(elsewhere / "ltemb.safetensors"), stopped_early=False)

    service = LocalTrainService(TrainQueue(None), trainer)
    service.compare_defaults = dict(steps=1, sampler="euler")
    item = service.enqueue(quick_config("/nowhere", str(tmp_path / "Lora"), output_name="myrun"), start=True,
                           compare_when_done=True)
    assert service.wait(300)
    grid = service.queue.get(item.id).grid
    assert grid.startswith(str(elsewhere / "compare" / "ltemb-"))
    record = read_grid_record(grid)
    assert record["columns"] == ["None (prompt without ltemb)", "ltemb epoch 1", "ltemb epoch 2 (final)"]
    assert record["rows"] == ["prompt"] and record["cells"][1]["prompt"].startswith("ltemb-000001, ")


def test_an_sdxl_cell_applies_both_text_encoders_vectors(tmp_path):
    """SDXL: a .pt (no metadata) with clip_l and clip_g vectors, drawn as applying it directly."""
    generator = torch.Generator().manual_seed(3)
    vectors = [torch.randn(2, 32, generator=generator), torch.randn(2, 64, generator=generator)]
    save_embedding(str(tmp_path / "xlemb-000001.pt"), "xlemb", vectors, 1, None, None)
    [saved] = saved_files(str(tmp_path))
    bundle = build_tiny_bundle("sdxl")
    request = GridRequest(files=[None, saved], prompts=["xlemb, red ball"], steps=2, sampler="euler", width=64,
                          height=64, seed=2)
    grid = standalone_grid(request, bundle, Progress(), device="cpu")
    assert grid.columns == ["None (prompt without xlemb)", "xlemb epoch 1"]
    with torch.no_grad(), bundle.frozen_for_training(torch.device("cpu"), torch.float32), \
            eval_mode(bundle.modules()), bundle.prompt_embeddings({"xlemb": vectors}):
        direct = txt2img(bundle, SamplePrompt("xlemb, red ball", "", 64, 64, 2, 7.0), "euler",
                         torch.Generator().manual_seed(2))
    assert ImageChops.difference(grid.cell(0, 1).image, direct).getbbox() is None
    assert ImageChops.difference(grid.cell(0, 0).image, direct).getbbox() is not None
