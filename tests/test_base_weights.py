"""base_weights_dtype: frozen base layers held in fp16/bf16, computed in fp32.

An fp16 weight up-cast to fp32 is exact, so training on an fp16-valued model with its layers
held in fp16 gives the same LoRA as training on its fp32 copy; each layer keeps only its 16-bit
weight for backward (never an up-cast copy); a checkpoint's layers are read straight into fp16;
the estimate counts them so; and what cannot work is refused by name."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import quick_config
from lib_trainer.config import TrainConfig
from lib_trainer.errors import InvalidInput
from lib_trainer.hosts.components import build_components
from lib_trainer.hosts.single_file import load_single_file, save_single_file
from lib_trainer.hosts.stored_layers import stored_layers
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.hosts.upcast_layers import upcast_forwards
from lib_trainer.progress import STEP, Progress
from lib_trainer.train.base_weights import layer_dtype_for, storage_note
from lib_trainer.train.loop import train
from lib_trainer.train.memory import bundle_memory


def fp16_valued(bundle):
    """The tiny model with every weight rounded through fp16 and held in fp32 again: what an fp16
    checkpoint loaded in fp32 is."""
    for module in bundle.modules():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                tensor.data = tensor.data.half().float()
    return bundle


def saved_during(function):
    """(dtype, shape) of every tensor autograd saves for backward while `function` runs."""
    saved = []

    def pack(tensor):
        saved.append((tensor.dtype, tuple(tensor.shape)))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = function()
    return result, saved


@pytest.mark.parametrize("layer, shape", [(torch.nn.Linear(48, 24), (2, 5, 48)),
                                          (torch.nn.Conv2d(6, 12, 3, padding=1), (2, 6, 9, 9))])
def test_a_layer_keeps_only_its_fp16_weight_for_backward_and_computes_as_fp32(layer, shape):
    torch.manual_seed(0)
    layer = layer.half().float()
    x = torch.randn(shape, requires_grad=True)
    expected = layer(x)
    expected.square().sum().backward()
    expected_grad, x.grad = x.grad, None

    layer.half().requires_grad_(False)
    with upcast_forwards([layer]):
        output, saved = saved_during(lambda: layer(x))
    output.square().sum().backward()
    assert "forward" not in layer.__dict__  # the override is gone
    assert saved == [(torch.float16, tuple(layer.weight.shape))]  # no fp32 copy, not the input
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, expected, rtol=0, atol=0)  # up-casting fp16 is exact
    torch.testing.assert_close(x.grad, expected_grad, rtol=0, atol=0)


def run(data, folder, **changes):
    """3 steps from the same seed on the fp16-valued tiny model: the file's tensors, the statuses,
    and the dtypes the UNet's layers and norms were held in during training."""
    bundle = fp16_valued(build_tiny_bundle("sd1"))
    statuses, held = [], set()
    progress = Progress()

    def sink(event):
        if event.text:
            statuses.append(event.text)
        if event.kind == STEP and event.label == "training":
            held.update((type(m).__name__, p.dtype) for m in bundle.unet.modules()
                        if isinstance(m, (torch.nn.Linear, torch.nn.GroupNorm)) for p in m.parameters(recurse=False))

    progress.sinks.append(sink)
    result = train(quick_config(data, str(folder), max_train_steps=3, **changes), bundle=bundle, progress=progress)
    assert {p.dtype for m in bundle.modules() for p in m.parameters()} == {torch.float32}  # given back as it was
    with safe_open(result.final_path, "pt") as handle:
        metadata = handle.metadata()
    return load_file(result.final_path), statuses, held, metadata


METHODS = {
    "lora": {},
    "locon": {"conv_dim": 4, "conv_alpha": 2},
    "lora-checkpointed": {"gradient_checkpointing": True},  # forwards recomputed in backward
    "dora": {"network_module": "lycoris.kohya", "network_args": ["algo=locon", "dora_wd=True"]},
    "ia3-on-input": {"network_module": "lycoris.kohya", "network_args": ["algo=ia3", "train_on_input=True"],
                     "learning_rate": 1e-2},
}


@pytest.fixture(scope="module")
def trained(small_root, tmp_path_factory):
    """(method, base_weights_dtype) -> `run`'s results, each trained once per module."""
    done = {}

    def get(method: str, dtype: str = ""):
        if (method, dtype) not in done:
            folder = tmp_path_factory.mktemp(f"{method}-{dtype or 'plain'}")
            done[method, dtype] = run(small_root, folder, base_weights_dtype=dtype, **METHODS[method])
        return done[method, dtype]

    return get


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fp16_storage_trains_the_same_weights_as_fp32(trained, method):
    plain, _, plain_held, plain_meta = trained(method)
    stored, statuses, held, metadata = trained(method, "fp16")
    assert held == {("Linear", torch.float16), ("GroupNorm", torch.float32)}
    assert plain_held == {("Linear", torch.float32), ("GroupNorm", torch.float32)}
    assert set(stored) == set(plain)
    # The same operations on the same fp32 values: equal up to reduction order in the backward
    # matmul; measured exactly equal on this CPU. Tolerance: 1e-6 relative.
    for key in plain:
        torch.testing.assert_close(stored[key], plain[key], rtol=1e-6, atol=1e-9)
    assert any("fp16" in s and "kept exactly" in s for s in statuses)
    assert metadata["ss_base_weights_dtype"] == "fp16" and "ss_base_weights_dtype" not in plain_meta


def test_bf16_storage_rounds_the_weights_and_says_so(trained):
    plain, *_ = trained("lora")
    rounded, statuses, held, _ = trained("lora", "bf16")
    assert ("Linear", torch.bfloat16) in held
    assert any(not torch.equal(rounded[key], plain[key]) for key in plain)  # lossy: another model
    assert any("bf16 rounds" in s for s in statuses)
    assert "kept exactly" in storage_note(torch.bfloat16, torch.bfloat16)
    assert "rounds the checkpoint's fp16 weights" in storage_note(torch.bfloat16, torch.float16)


def test_a_checkpoints_layers_are_read_straight_into_fp16(tmp_path, monkeypatch):
    from lib_trainer.hosts.checkpoint_file import CheckpointReader

    path = str(tmp_path / "tiny.safetensors")
    save_single_file(build_components("tiny-sd1", dtype=torch.float16, seed=1), path)
    asked = {}
    tensor = CheckpointReader.tensor
    monkeypatch.setattr(CheckpointReader, "tensor",
                        lambda self, key, dtype=None: asked.setdefault(key, set()).add(dtype) or tensor(self, key, dtype))
    components, info = load_single_file(path, layer_dtype=torch.float16)
    assert info.unet_dtype == torch.float16
    for module in (components.unet, *components.text_encoders):
        for layer in module.modules():
            expected = torch.float16 if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) else torch.float32
            assert {p.dtype for p in layer.parameters(recurse=False)} <= {expected}
    assert {p.dtype for p in components.vae.parameters()} == {torch.float32}
    conv_in = asked["model.diffusion_model.input_blocks.0.0.weight"]
    assert torch.float32 not in conv_in and torch.float16 in conv_in  # never an fp32 copy of a layer
    assert asked["model.diffusion_model.out.0.weight"] == {torch.float32}  # a norm


def test_the_estimate_counts_the_layers_in_their_stored_dtype(small_root, tmp_path):
    bundle = build_tiny_bundle("sdxl")
    plain = bundle_memory(quick_config(small_root, str(tmp_path)), bundle, "RAM").weights_gb
    config = quick_config(small_root, str(tmp_path), base_weights_dtype="fp16")
    estimated = bundle_memory(config, bundle, "RAM").weights_gb
    with bundle.frozen_for_training(torch.device("cpu"), torch.float32, layer_dtype=torch.float16):
        held = sum(p.numel() * p.element_size() for m in bundle.modules() for p in m.parameters()) / 1024 ** 3
        assert len(stored_layers(bundle.unet)) > 0
    assert estimated == pytest.approx(held)
    assert estimated < plain  # the tiny VAE and token tables, kept in fp32, are a large share here


@pytest.mark.parametrize("changes, refused", [
    ({"fp8_base": True, "mixed_precision": "bf16"}, "fp8_base"),
    ({"mixed_precision": "bf16"}, "leave base_weights_dtype empty"),
    ({"mixed_precision": "fp16", "full_fp16": True, "base_weights_dtype": "bf16"}, "full_fp16"),
])
def test_combinations_that_make_no_sense_are_refused(changes, refused):
    config = TrainConfig().replace(**{"base_weights_dtype": "fp16", **changes})
    assert any(refused in problem and "base_weights_dtype" in problem for problem in config.problems())


def test_in_the_webui_it_is_a_no_op_on_a_model_in_that_dtype_and_refused_otherwise():
    borrowed = build_tiny_bundle("sd1")
    borrowed.owns_weights = False
    config = TrainConfig().replace(base_weights_dtype="fp16", mixed_precision="fp16")
    with pytest.raises(InvalidInput, match="WebUI's loaded model is in fp32"):
        layer_dtype_for(config, borrowed)
    borrowed.unet.half()
    dtype, notes = layer_dtype_for(config, borrowed)
    assert dtype is None and "nothing to change" in notes[0]
    assert layer_dtype_for(TrainConfig(), borrowed) == (None, [])


def test_bench_loads_the_model_as_the_config_holds_it():
    from lib_trainer.bench import measure_loading

    bundle, _ = measure_loading(TrainConfig().replace(pretrained_model_name_or_path="tiny:sd1",
                                                      base_weights_dtype="fp16"))
    assert bundle.unet.conv_in.weight.dtype == torch.float16
    assert bundle.unet.conv_norm_out.weight.dtype == torch.float32
