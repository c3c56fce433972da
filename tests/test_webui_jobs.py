"""The WebUI side of training (lib_trainer/webui/) with stand-ins for the WebUI's modules: its
`shared` state and settings, the job lock, --lowvram's hooks and the built-in Lora extension's
in-place merging (written from its documented behaviour). The model is a WebUI-shaped tiny
model (webui_models.py)."""
from __future__ import annotations

import importlib
import os
import re
import sys
import threading
import types

import pytest
import torch

from conftest import quick_config
from webui_embedding_db import webui_embedding_modules
from webui_models import webui_model
from test_webui_host import assert_same_state, model_state


WEBUI_MODULES = ("embeddings", "hypernetworks", "lora_networks", "model", "sampling", "service", "taggers")


class FakeState:
    def __init__(self):
        self.job, self.job_count, self.job_no, self.textinfo = "", 0, 0, ""
        self.sampling_step = self.sampling_steps = 0
        self.interrupted = self.stopping_generation = False
        self.images, self.begun, self.ended = [], [], 0

    def begin(self, job=""):
        self.begun.append(job)

    def end(self):
        self.ended += 1

    def assign_current_image(self, image):
        self.images.append(image)

    def interrupt(self):
        self.interrupted = True


class FakeLora:
    """The built-in Lora's in-place merge: on a forward with another set of networks it backs
    the weight up once, restores it, and adds every loaded network's delta."""

    def __init__(self):
        self.loaded_networks = []
        self.listed = 0  # times the list of available networks was refreshed

    def list_available_networks(self):
        self.listed += 1

    def network_restore_weights_from_backup(self, layer):
        backup = getattr(layer, "network_weights_backup", None)
        if backup is not None:
            layer.weight.copy_(backup)

    def network_apply_weights(self, layer):
        wanted = tuple(net.name for net in self.loaded_networks)
        if getattr(layer, "network_current_names", ()) == wanted:
            return
        if getattr(layer, "network_weights_backup", None) is None and wanted:
            layer.network_weights_backup = layer.weight.detach().clone()
        self.network_restore_weights_from_backup(layer)
        for net in self.loaded_networks:
            layer.weight += net.delta(layer)
        layer.network_current_names = wanted


    def load_network(self, name, on_disk):
        """Match as the WebUI's Lora loader does (extensions-builtin/Lora/networks.py): each
        file layer's name is turned into the WebUI's name of a module, which must be in the
        model's network layer mapping; a layer whose module is not there is not loaded."""
        from safetensors import safe_open

        mapping = webui_layer_mapping(self.shared.sd_model, self.hidden)
        with safe_open(on_disk.filename, "pt") as handle:
            layers = {key.partition(".")[0] for key in handle.keys()}
        matched = {layer: types.SimpleNamespace(network_key=f"{layer}.alpha") for layer in layers
                   if webui_layer_name(layer) in mapping}
        return types.SimpleNamespace(name=name, modules=matched)

    shared = None
    hidden: tuple = ()  # module names left out of the mapping, as for a model the WebUI wraps otherwise


def webui_layer_mapping(sd_model, hidden=()) -> set[str]:
    """The WebUI's network_layer_mapping of an SD1 model: every module of the text encoder
    (inside the hijack's `wrapped`) and of `model`, named by its path with "_" for "."."""
    text = getattr(sd_model.cond_stage_model, "wrapped", sd_model.cond_stage_model)
    text_names = [name for name, _ in text.named_modules()]
    if not hasattr(text.transformer, "text_model"):
        # transformers 5's CLIPTextModel dropped the `text_model` level that the WebUI's
        # transformers 4 has (its names are transformer.text_model.encoder...): name them so
        text_names = [name.replace("transformer.", "transformer.text_model.", 1) for name in text_names]
    names = text_names + [name for name, _ in sd_model.model.named_modules()]
    return {name.replace(".", "_") for name in names if not any(name.startswith(h) for h in hidden)}


RESNET_PARTS = {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
                "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}


def webui_layer_name(layer: str) -> str:
    """The WebUI's module name for a kohya SD1 layer name (diffusers numbering -> ldm's):
    down block b, item i is input block 1 + 3b + i; up block b, item i is output block 3b + i;
    attentions sit at index 1 of an ldm block, resnets at 0, with ldm's names for their parts."""
    found = re.fullmatch(r"lora_unet_(down|up)_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", layer)
    if found:
        side, block, kind, item, part = found.groups()
        number = (1 if side == "down" else 0) + 3 * int(block) + int(item)
        part = RESNET_PARTS.get(part, part) if kind == "resnets" else part
        where = "input" if side == "down" else "output"
        return f"diffusion_model_{where}_blocks_{number}_{1 if kind == 'attentions' else 0}_{part}"
    found = re.fullmatch(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", layer)
    if found:
        kind, item, part = found.groups()
        number = 1 if kind == "attentions" else 2 * int(item)
        return f"diffusion_model_middle_block_{number}_{RESNET_PARTS.get(part, part) if kind == 'resnets' else part}"
    found = re.fullmatch(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", layer)
    if found:
        return f"diffusion_model_input_blocks_{3 + 3 * int(found.group(1))}_0_op"
    found = re.fullmatch(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", layer)
    if found:
        block = int(found.group(1))
        return f"diffusion_model_output_blocks_{2 + 3 * block}_{2 if block > 0 else 1}_conv"
    if layer.startswith("lora_te_text_model_"):
        return "transformer_" + layer[len("lora_te_"):]
    return layer


class FakeNetwork:
    def __init__(self, name, covers=None):
        self.name = name
        self.covers = covers  # ids of the layers the network has weights for (None: all)

    def delta(self, layer):
        if self.covers is not None and id(layer) not in self.covers:
            return torch.zeros_like(layer.weight)  # as the WebUI: a layer the network lacks is left alone
        generator = torch.Generator().manual_seed(len(self.name))
        return torch.randn(layer.weight.shape, generator=generator) * 0.1


@pytest.fixture
def webui(monkeypatch, tmp_path):
    """Stand-in `modules` package; yields the webui modules imported against it, and the fakes."""
    state = FakeState()
    opts = types.SimpleNamespace(data={"CLIP_stop_at_last_layers": 1, "emphasis": "Original"}, lora_functional=False,
                                 lib_trainer_output_dir="")
    shared = types.SimpleNamespace(state=state, opts=opts, sd_model=None,
                                   cmd_opts=types.SimpleNamespace(lora_dir=str(tmp_path / "Lora"),
                                                                  embeddings_dir=str(tmp_path / "embeddings")))
    lowvram = types.SimpleNamespace(moved=[], send_everything_to_cpu=lambda: lowvram.moved.append("cpu"))
    parts = {
        "shared": shared,
        "call_queue": types.SimpleNamespace(queue_lock=threading.Lock()),
        "devices": types.SimpleNamespace(device=torch.device("cpu"), torch_gc=lambda: None),
        "lowvram": lowvram,
        "paths_internal": types.SimpleNamespace(data_path=str(tmp_path), models_path=str(tmp_path / "models"),
                                                script_path=str(tmp_path)),
        "paths": types.SimpleNamespace(models_path=str(tmp_path / "models")),
        "deepbooru": types.SimpleNamespace(model=None),
        **webui_embedding_modules(768, str(tmp_path / "embeddings")),  # SD1's width
    }
    package = types.ModuleType("modules")
    for name, value in parts.items():
        if "." not in name:
            setattr(package, name, value)
        monkeypatch.setitem(sys.modules, f"modules.{name}", value)
    monkeypatch.setitem(sys.modules, "modules", package)
    lora = FakeLora()
    lora.shared = shared
    monkeypatch.setitem(sys.modules, "networks", lora)
    monkeypatch.setitem(sys.modules, "network", types.SimpleNamespace(
        NetworkOnDisk=lambda name, filename: types.SimpleNamespace(name=name, filename=filename)))
    _forget_webui_modules()
    service = importlib.import_module("lib_trainer.webui.service")
    yield types.SimpleNamespace(
        service=service, model=sys.modules["lib_trainer.webui.model"],
        fake=types.SimpleNamespace(state=state, shared=shared, lora=lora, lowvram=lowvram,
                                   embedding_db=parts["sd_hijack"].model_hijack.embedding_db))
    _forget_webui_modules()


def _forget_webui_modules():
    """The webui modules bind the `modules` they were imported against: import them afresh
    against each test's stand-ins, and leave none behind for tests that expect no WebUI."""
    package = sys.modules.get("lib_trainer.webui")
    for name in WEBUI_MODULES:
        sys.modules.pop(f"lib_trainer.webui.{name}", None)
        if package is not None and hasattr(package, name):
            delattr(package, name)


@pytest.fixture(scope="module")
def sd1_model(tmp_path_factory):
    model, _ = webui_model("sd1", tmp_path_factory.mktemp("sd1"))
    return model


def _merged_lora(webui, model):
    """The state after a generation with <lora:last:1>: merged into the layers it touches. The
    model's layer mapping holds every module, containers too, as the WebUI's does."""
    model.network_layer_mapping = {name.replace(".", "_"): module for name, module in model.named_modules()}
    layers = {name.replace(".", "_"): module for name, module in model.named_modules()
              if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and "attn" in name}
    webui.fake.lora.loaded_networks[:] = [FakeNetwork("last", covers={id(layer) for layer in layers.values()})]
    with torch.no_grad():
        for layer in layers.values():
            webui.fake.lora.network_apply_weights(layer)
    return layers


def test_training_starts_from_the_base_weights_and_the_users_lora_comes_back(webui, sd1_model, small_root, tmp_path):
    layers = _merged_lora(webui, sd1_model)
    merged_state = model_state(sd1_model)
    base = {name: layer.network_weights_backup.clone() for name, layer in layers.items()}
    bundle = webui.model.WebUIBundle(sd1_model)
    seen = {}

    def look(event):
        if event.kind == "step" and event.label == "training" and not seen:
            seen.update({name: layer.weight.detach().clone() for name, layer in layers.items()})

    from lib_trainer.progress import Progress
    from lib_trainer.train.loop import train

    with webui.model.borrowed_model(bundle, clip_skip=2):
        assert webui.fake.lora.loaded_networks == []
        assert webui.fake.shared.opts.data["CLIP_stop_at_last_layers"] == 2
        train(quick_config(small_root, str(tmp_path), max_train_steps=2), bundle=bundle, progress=Progress([look]))
    assert all(torch.equal(seen[name], base[name]) for name in layers)  # trained on the base weights
    assert [n.name for n in webui.fake.lora.loaded_networks] == ["last"]
    assert webui.fake.shared.opts.data["CLIP_stop_at_last_layers"] == 1
    assert_same_state(merged_state, model_state(sd1_model))  # the merged weights are back, bit for bit
    del sd1_model.network_layer_mapping
    webui.fake.lora.loaded_networks.clear()
    with torch.no_grad():
        for layer in layers.values():
            webui.fake.lora.network_apply_weights(layer)


def test_lowvram_hooks_are_suspended_while_training_and_restored(webui, sd1_model):
    moves = []

    def send_me_to_gpu(module, _):
        moves.append(module)

    handles = [sd1_model.model.register_forward_pre_hook(send_me_to_gpu),
               sd1_model.cond_stage_model.transformer.register_forward_pre_hook(send_me_to_gpu)]
    sd1_model.lowvram = True
    before = model_state(sd1_model)
    try:
        bundle = webui.model.WebUIBundle(sd1_model)
        with webui.model.borrowed_model(bundle, clip_skip=1):
            bundle.encode_prompts(["a dog"])
            assert moves == []
        assert webui.fake.lowvram.moved == ["cpu", "cpu"]
        assert_same_state(before, model_state(sd1_model))
        bundle.encode_prompts(["a dog"])
        assert moves == [sd1_model.cond_stage_model.transformer]
    finally:
        for handle in handles:
            handle.remove()
        del sd1_model.lowvram


def test_a_run_is_a_webui_job_and_interrupt_stops_it_with_a_saved_file(webui, sd1_model, small_root, tmp_path):
    webui.fake.shared.sd_model = sd1_model
    from lib_trainer.jobs.queue import TrainQueue

    service = webui.service.WebUITrainService(TrainQueue(webui.service.queue_path()))
    state = webui.fake.state

    class InterruptAtStep:
        def __call__(self, event):
            if event.kind == "step" and event.label == "training" and event.done == 2:
                state.interrupt()  # the WebUI's Interrupt button

    service._host_sinks = lambda commands: [InterruptAtStep(), webui.service.WebUIState(commands)]
    config = quick_config(small_root, str(tmp_path / "out"), max_train_steps=6,
                          pretrained_model_name_or_path=webui.service.LOADED_MODEL)
    service.enqueue(config, start=True)
    assert service.wait(120)
    snapshot = service.snapshot()
    assert snapshot.items[0].status == "stopped", snapshot.run.error
    assert snapshot.items[0].result.endswith("test-step00000002.safetensors")
    assert state.begun == ["lib_trainer-1"] and state.ended == 1
    assert state.job_count == 6 and state.job_no == 2
    assert "loss" in state.textinfo or "stopped" in state.textinfo


def test_training_waits_for_the_webui_job_lock(webui, sd1_model, small_root, tmp_path):
    webui.fake.shared.sd_model = sd1_model
    from lib_trainer.jobs.queue import TrainQueue

    lock = sys.modules["modules.call_queue"].queue_lock
    service = webui.service.WebUITrainService(TrainQueue(webui.service.queue_path()))
    lock.acquire()  # a generation is running
    try:
        service.enqueue(quick_config(small_root, str(tmp_path / "out"), max_train_steps=1,
                                     pretrained_model_name_or_path=webui.service.LOADED_MODEL), start=True)
        assert not service.wait(2)
        assert any("waiting for the WebUI" in m for m in service.snapshot().run.messages)
        assert webui.fake.state.begun == []
    finally:
        lock.release()
    assert service.wait(120)
    # with nothing running there is nothing to wait for, and nothing is said
    service.enqueue(quick_config(small_root, str(tmp_path / "out2"), max_train_steps=1,
                                 pretrained_model_name_or_path=webui.service.LOADED_MODEL), start=True)
    assert service.wait(120)
    assert not any("waiting for the WebUI" in m for m in service.snapshot().run.messages)
    assert service.wait(120)
    assert service.snapshot().items[0].status == "done"


def test_a_checkpoint_path_in_the_webui_is_refused_with_what_to_do(webui, sd1_model, small_root, tmp_path):
    webui.fake.shared.sd_model = sd1_model
    from lib_trainer.progress import Progress

    config = quick_config(small_root, str(tmp_path), pretrained_model_name_or_path="/models/other.safetensors")
    with pytest.raises(ValueError, match="checkpoint list"):
        webui.service.webui_trainer(config, Progress())


def test_the_memory_estimate_counts_the_loaded_weights(webui, sd1_model, small_root, tmp_path):
    webui.fake.shared.sd_model = sd1_model
    text = webui.service.memory_estimate(quick_config(small_root, str(tmp_path)))
    weights = sum(p.numel() * 4 for m in (sd1_model.model, sd1_model.cond_stage_model, sd1_model.first_stage_model)
                  for p in m.parameters())
    assert f"model weights {weights / 1024 ** 3:.1f} GB" in text and "(sd1)" in text


def test_each_saved_file_is_read_back_and_unmatched_layers_are_reported(webui, sd1_model, small_root, tmp_path):
    webui.fake.shared.sd_model = sd1_model
    from lib_trainer.progress import Progress

    messages = []
    progress = Progress([lambda event: event.kind == "status" and messages.append(event.text)])
    config = quick_config(small_root, str(tmp_path / "good"), max_train_steps=2, save_every_n_steps=1,
                          pretrained_model_name_or_path=webui.service.LOADED_MODEL)
    webui.service.webui_trainer(config, progress)
    assert not [m for m in messages if "WARNING" in m]
    assert messages.count("checked with the WebUI's Lora loader: all 216 layers matched") == 2
    assert webui.fake.lora.listed == 2  # <lora:name> finds each new file without a manual refresh

    webui.fake.lora.hidden = ("transformer",)  # a model whose text encoder the WebUI maps otherwise
    messages.clear()
    webui.service.webui_trainer(config.replace(output_dir=str(tmp_path / "bad")), Progress(
        [lambda event: event.kind == "status" and messages.append(event.text)]))
    warnings = [m for m in messages if m.startswith("WARNING")]
    assert len(warnings) == 2  # the step-1 file and the final one
    assert "did not match 24 of 216 layers" in warnings[0]

    # the stand-in rejects what the WebUI rejects: a layer the model does not have
    from safetensors.torch import save_file

    webui.fake.lora.hidden = ()
    odd = str(tmp_path / "odd.safetensors")
    save_file({f"{layer}.{part}": torch.zeros(1, 1) for layer in ("lora_unet_down_blocks_0_attentions_0_proj_in",
                                                                   "lora_unet_down_blocks_7_attentions_0_proj_in")
               for part in ("lora_down.weight", "lora_up.weight")}, odd)
    matched, problem = sys.modules["lib_trainer.webui.lora_networks"].check_with_webui_loader(odd)
    assert matched == 1
    assert "did not match 1 of 2 layers (e.g. lora_unet_down_blocks_7_attentions_0_proj_in)" in problem


def test_the_queue_lives_in_the_state_folder_and_an_old_queue_file_is_moved_into_it(webui, small_root, tmp_path):
    from lib_trainer.jobs.queue import TrainQueue

    folder = tmp_path / "lib_trainer"  # the WebUI's data folder is tmp_path here
    old = TrainQueue(str(tmp_path / "made-by-an-earlier-version"))
    old.add(quick_config(small_root, str(tmp_path / "out")), name="kept")
    os.replace(old.path, folder)  # the earlier layout: a JSON file named `lib_trainer`

    path = webui.service.queue_path()
    assert path == str(folder / "queue.json") and folder.is_dir()
    assert [item.name for item in TrainQueue(path).snapshot()] == ["kept"]
    assert sorted(os.listdir(tmp_path)) == ["lib_trainer"]  # nothing left beside it
    assert webui.service.queue_path() == path  # a second start finds the folder as it is

    # A start interrupted after moving the file aside finishes the move on the next one.
    os.replace(path, str(folder) + ".queue-moving")
    os.rmdir(folder)
    assert [item.name for item in TrainQueue(webui.service.queue_path()).snapshot()] == ["kept"]
    assert sorted(os.listdir(tmp_path)) == ["lib_trainer"]


def test_the_webui_script_registers_the_tab_its_setting_and_the_webuis_taggers(webui, sd1_model, monkeypatch,
                                                                                tmp_path):
    import runpy

    import gradio as gr

    from lib_trainer.preprocess import tagging

    monkeypatch.setattr(tagging, "TAGGERS", dict(tagging.TAGGERS))  # the script registers into it

    webui.fake.shared.sd_model = sd1_model
    registered = {}
    callbacks = types.SimpleNamespace(on_ui_tabs=lambda f: registered.setdefault("tabs", f),
                                      on_ui_settings=lambda f: registered.setdefault("settings", f))
    monkeypatch.setitem(sys.modules, "modules.script_callbacks", callbacks)
    monkeypatch.setattr(sys.modules["modules"], "script_callbacks", callbacks, raising=False)
    options = {}
    webui.fake.shared.OptionInfo = lambda default, label, section: (default, label, section)
    webui.fake.shared.opts.add_option = lambda key, info: options.setdefault(key, info)
    monkeypatch.setattr(sys.modules["modules"], "shared", webui.fake.shared, raising=False)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_path(os.path.join(root, "scripts", "lora_train_tab.py"))
    taggers = sys.modules["lib_trainer.webui.taggers"]
    assert isinstance(tagging.make_tagger("deepbooru", tagging.TagOptions()), taggers.WebUIDeepbooru)

    [(blocks, title, elem_id)] = registered["tabs"]()
    assert isinstance(blocks, gr.Blocks) and title == "LoRA Train" and elem_id == "lib_trainer_tab"
    registered["settings"]()
    assert "lib_trainer_output_dir" in options
    defaults = webui.service.webui_defaults()
    assert defaults.output_dir == str(tmp_path / "Lora")  # trained files land on the Lora cards
    assert defaults.pretrained_model_name_or_path == webui.service.LOADED_MODEL


class FakeTxt2Img:
    """The WebUI's StableDiffusionProcessingTxt2Img: keeps its arguments."""
    cached_c = cached_uc = "class-wide cache"
    made: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.closed = kwargs, False
        self.made.append(self)

    def close(self):
        self.closed = True


def fake_process_images(p):
    """Like the WebUI's: torch's global generator is reseeded from the seed (modules/rng.py);
    the noise and any script of an extension draw from the global generators."""
    import random

    import numpy as np
    from PIL import Image

    torch.manual_seed(p.kwargs["seed"])
    torch.randn(4)
    random.random()
    np.random.rand()
    return types.SimpleNamespace(images=[Image.new("RGB", (p.kwargs["width"], p.kwargs["height"]))])


@pytest.fixture
def webui_txt2img(webui, monkeypatch):
    processing = types.SimpleNamespace(StableDiffusionProcessingTxt2Img=FakeTxt2Img,
                                       process_images=fake_process_images)
    monkeypatch.setitem(sys.modules, "modules.processing", processing)
    monkeypatch.setattr(sys.modules["modules"], "processing", processing, raising=False)
    monkeypatch.setattr(FakeTxt2Img, "made", [])
    return FakeTxt2Img.made


def test_samples_go_through_the_webuis_txt2img_without_extra_networks(webui, webui_txt2img, sd1_model):
    from lib_trainer.train.sample_prompts import SamplePrompt
    from lib_trainer.train.txt2img import sample_backend

    bundle = webui.model.WebUIBundle(sd1_model)
    prompt = SamplePrompt("ltdemo ball <lora:other:1>", "blurry", width=64, height=96, steps=3, cfg_scale=5)
    image = sample_backend(bundle)(prompt, "euler_a", 1234)
    [p] = webui_txt2img
    assert image.size == (64, 96) and p.closed
    assert p.kwargs["seed"] == 1234 and p.kwargs["sampler_name"] == "Euler a" and p.kwargs["steps"] == 3
    assert p.kwargs["negative_prompt"] == "blurry" and p.kwargs["do_not_save_samples"]
    assert p.disable_extra_networks  # <lora:...> must not merge into the weights being trained
    assert p.cached_c == [None, None] and p.cached_uc == [None, None]  # not the class-wide cache


def test_a_sample_round_through_the_webui_leaves_every_global_generator_as_it_was(webui, webui_txt2img, sd1_model,
                                                                                  tmp_path):
    import random

    import numpy as np

    from lib_trainer.config import TrainConfig
    from lib_trainer.networks.registry import create_network
    from lib_trainer.progress import Progress
    from lib_trainer.train.sampling import SampleMaker

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ltdemo --w 64 --h 64 --s 1 --d 5\nltdemo ball --w 64 --h 64 --s 1\n", encoding="utf-8")
    config = TrainConfig(sample_every_n_steps=1, sample_prompts=str(prompts), output_dir=str(tmp_path),
                         output_name="t")
    bundle = webui.model.WebUIBundle(sd1_model)
    network = create_network(config, bundle.target_layers(False))
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    with network.attached():
        SampleMaker(config, bundle, network, torch.device("cpu"), Progress()).after_step(1)
    assert [p.kwargs["seed"] for p in webui_txt2img] == [5, 43]  # the WebUI's txt2img ran, and reseeded
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    after = np.random.get_state()
    assert np.array_equal(after[1], before[2][1]) and after[2:] == before[2][2:]
    assert sorted(os.listdir(tmp_path / "sample")) == ["t_000001_00_5.png", "t_000001_01_43.png"]
