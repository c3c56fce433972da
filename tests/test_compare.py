"""File x weight grids (lib_trainer.compare) on tiny models of every family, and `compare` on the command line."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import quick_config
from lib_trainer.__main__ import main
from lib_trainer.compare.grid import BASE_LABEL, GridRequest, grid_cells, read_grid_record, save_grid
from lib_trainer.compare.runs import (read_saved_file, run_files, saved_files, training_model, training_prompt,
                                      training_size)
from lib_trainer.compare.standalone import standalone_grid
from lib_trainer.compare.values import parse_numbers
from lib_trainer.config import TrainConfig
from lib_trainer.errors import InvalidInput
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.networks.registry import create_network, network_from_file
from lib_trainer.progress import silent
from lib_trainer.train.loop import train

FAMILIES = ["sd1", "sd2", "sdxl"]


def write_random_run(bundle, folder: str, run: str, epochs: int, seed: int) -> list[str]:
    """A run's epoch files as a trainer would leave them, with random (clearly visible) weights."""
    network = create_network(TrainConfig().replace(network_dim=4, network_alpha=4.0, conv_dim=2, conv_alpha=2.0),
                             bundle.target_layers(include_conv=True))
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for epoch in range(1, epochs + 1):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        path = os.path.join(folder, f"{run}-{epoch:06d}.safetensors")
        network.write_file(path, {"ss_output_name": run, "ss_epoch": str(epoch), "ss_steps": str(epoch * 8),
                                  "lib_trainer_average_loss": str(0.2 / epoch)}, None)
        paths.append(path)
    return paths


@pytest.fixture(scope="module", params=FAMILIES)
def family_grid(request, tmp_path_factory):
    """A None + 2 files x 3 weights grid for two prompts, on one family's tiny model."""
    family = request.param
    folder = str(tmp_path_factory.mktemp(f"compare-{family}"))
    bundle = build_tiny_bundle(family)
    write_random_run(bundle, folder, "run", epochs=2, seed=3)
    files = run_files(folder, "run")
    grid_request = GridRequest(files=[files[1], None, files[0]], prompts=["a ball", "a red ball"],
                               weights=[0.0, 0.5, 1.0], seed=11, steps=3, width=64, height=64)
    return family, folder, grid_request, standalone_grid(grid_request, bundle, silent(), device="cpu")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_rows_and_columns_are_in_the_order_asked_with_labels_from_metadata(family_grid):
    _, _, request, grid = family_grid
    assert grid.columns == ["run epoch 2", BASE_LABEL, "run epoch 1"]
    assert grid.rows == [f"prompt {p}, weight {w}" for p in (1, 2) for w in ("0", "0.5", "1")]
    assert grid.image.size[0] > 3 * 64 and grid.image.size[1] > 6 * 64
    for drawn in grid.cells:
        assert drawn.cell.file is request.files[drawn.cell.column]
        assert drawn.cell.weight == request.weights[drawn.cell.row % 3]
        assert drawn.cell.prompt == request.prompts[drawn.cell.row // 3]


def test_every_cell_has_the_grid_seed_and_says_which_file_and_weight(family_grid):
    _, _, _, grid = family_grid
    for drawn in grid.cells:
        assert "Seed: 11," in drawn.infotext
        if drawn.cell.file is None:
            assert "<lora:" not in drawn.infotext
        else:
            assert f"<lora:{drawn.cell.file.name}:{drawn.cell.weight:g}>" in drawn.infotext


def test_weight_zero_and_the_base_column_are_the_base_model_bit_for_bit(family_grid):
    _, _, _, grid = family_grid
    for prompt_row in (0, 3):
        base = pixels(grid.cell(prompt_row, 1).image)
        for row in range(prompt_row, prompt_row + 3):
            assert np.array_equal(pixels(grid.cell(row, 1).image), base)  # None ignores the weight
        for column in (0, 2):
            assert np.array_equal(pixels(grid.cell(prompt_row, column).image), base)  # weight 0


def test_a_higher_weight_changes_the_image_more(family_grid):
    _, _, _, grid = family_grid
    for column in (0, 2):
        base = pixels(grid.cell(0, 1).image)
        distances = [np.abs(pixels(grid.cell(row, column).image) - base).mean() for row in range(3)]
        assert distances[0] == 0 < distances[1] < distances[2]


def test_the_grid_png_carries_every_cells_infotext(family_grid, tmp_path):
    _, _, _, grid = family_grid
    path = save_grid(grid, str(tmp_path / "grid.png"))
    record = read_grid_record(path)
    assert record["columns"] == grid.columns and record["rows"] == grid.rows
    by_position = {(c["row"], c["column"]): c for c in record["cells"]}
    assert len(by_position) == len(grid.cells) == 18
    for drawn in grid.cells:
        assert by_position[(drawn.cell.row, drawn.cell.column)]["infotext"] == drawn.infotext
    with Image.open(path) as saved:
        assert saved.text["parameters"] == grid.cell(0, 0).infotext
    with Image.open(tmp_path / "grid" / "r01-c02.png") as cell:
        assert cell.text["parameters"] == grid.cell(1, 2).infotext
        assert np.array_equal(pixels(cell), pixels(grid.cell(1, 2).image))


def test_cells_are_drawn_file_by_file_and_the_base_once_per_prompt():
    request = GridRequest(files=[None, "a", "b"], prompts=["x", "y"], weights=[0.5, 1.0])
    order = [(cell.column, cell.prompt_index) for cell in grid_cells(request)]
    assert order == sorted(order, key=lambda pair: pair[0])  # one file at a time
    assert len(order) == 3 * 2 * 2


def test_a_file_of_another_family_is_refused_with_the_reason(tmp_path):
    path = write_random_run(build_tiny_bundle("sdxl"), str(tmp_path), "xl", epochs=1, seed=1)[0]
    with pytest.raises(InvalidInput, match="match no layer of this sd1 model"):
        network_from_file(path, build_tiny_bundle("sd1"))


@pytest.mark.parametrize("text, expected", [
    ("0.6,0.8,1", [0.6, 0.8, 1.0]), ("0.6-1 (+0.1)", [0.6, 0.7, 0.8, 0.9, 1.0]), ("0-1 [3]", [0.0, 0.5, 1.0]),
    ("1-0 (-0.5)", [1.0, 0.5, 0.0]), ("0, 0.5-1 (+0.25)", [0.0, 0.5, 0.75, 1.0])])
def test_weights_are_read_as_the_xyz_plot_reads_them(text, expected):
    assert parse_numbers(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, message", [("0.6, high", "'high' is not a number"),
                                           ("1-0 (+0.1)", "never reaches"), (" , ", "at least one number"),
                                           ("0-100 (+0.1)", "gives more than 50 values")])
def test_bad_weights_say_what_to_write(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse_numbers(text)


# --- a real run's files, and the command line --------------------------------------------

@pytest.fixture(scope="module")
def trained_run(small_root, tmp_path_factory) -> str:
    """Two epochs of a short tiny-model run, a file saved after each."""
    output = str(tmp_path_factory.mktemp("compare-run"))
    train(quick_config(small_root, output, max_train_epochs=2, save_every_n_epochs=1), progress=silent())
    return output


def test_a_runs_files_are_listed_in_training_order_with_epoch_step_and_loss(trained_run):
    files = saved_files(trained_run)
    assert [saved.name for saved in files] == ["test-000001", "test"]
    first, final = files
    assert (first.epoch, final.epoch) == (1, 2) and first.step < final.step
    assert first.label == "test epoch 1" and final.label == "test epoch 2 (final)"
    assert first.average_loss is not None and f"avg loss {first.average_loss:.4f}" in first.summary
    assert training_model(final) == "tiny:sd1"
    assert training_size(final) == (64, 64)
    assert training_prompt(final).endswith(", smile") and training_prompt(final).startswith("ltdemo")


def test_metadata_is_read_again_when_a_file_changes(tmp_path):
    bundle = build_tiny_bundle("sd1")
    path = write_random_run(bundle, str(tmp_path), "r", epochs=1, seed=2)[0]
    assert read_saved_file(path).epoch == 1
    network = create_network(TrainConfig().replace(network_dim=4), bundle.target_layers(include_conv=False))
    network.write_file(path, {"ss_output_name": "r", "ss_epoch": "5", "ss_steps": "40"}, None)
    os.utime(path, ns=(1, 10**18))  # a new modification time, whatever the clock's resolution
    assert read_saved_file(path).epoch == 5


def test_compare_on_the_command_line_makes_the_runs_grid(trained_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["compare", "--run", trained_run, "--weights", "0.5-1 (+0.5)", "--steps", "2", "--seed", "3",
                 "--out", str(out)]) == 0
    record = read_grid_record(str(out))
    assert record["columns"] == [BASE_LABEL, "test epoch 1", "test epoch 2 (final)"]
    assert record["rows"] == ["weight 0.5", "weight 1"]
    assert all("Seed: 3," in cell["infotext"] and "Size: 64x64" in cell["infotext"] for cell in record["cells"])
    assert capsys.readouterr().out.strip() == str(out)


def test_compare_on_the_command_line_says_what_is_wrong(trained_run, tmp_path, capsys):
    assert main(["compare", "--run", str(tmp_path / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["compare", "--run", trained_run, "--files", "test-000009"]) == 1
    assert "no network file 'test-000009'" in capsys.readouterr().err
    assert main(["compare", "--run", trained_run, "--size", "64x60", "--steps", "1"]) == 1
    assert "height=60 must be a multiple of 8" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", "--run", str(empty)]) == 1
    assert "no network files there" in capsys.readouterr().err


def test_grid_record_is_json_with_paths(family_grid, tmp_path):
    _, folder, _, grid = family_grid
    record = read_grid_record(save_grid(grid, str(tmp_path / "g.png"), cells=False))
    assert {cell["file"] for cell in record["cells"]} == {None, *(f.path for f in run_files(folder, "run"))}
    assert json.dumps(record)
    assert not (tmp_path / "g").exists()


# --- every network type we train compares -------------------------------------------------

LYCORIS_TYPES = {
    "LoCon": dict(network_module="networks.lora", conv_dim=2, conv_alpha=1.0),
    "LoHa": dict(network_module="lycoris.kohya", network_args=["algo=loha", "conv_dim=2", "conv_alpha=1"]),
    "LoKr": dict(network_module="lycoris.kohya", network_args=["algo=lokr", "factor=4"]),
    "IA3": dict(network_module="lycoris.kohya", network_args=["algo=ia3"]),
    "DoRA": dict(network_module="lycoris.kohya", network_args=["algo=locon", "dora_wd=True"]),
    "Tucker": dict(network_module="lycoris.kohya", network_args=["algo=locon", "use_tucker=True", "conv_dim=2"]),
    "full": dict(network_module="lycoris.kohya", network_args=["algo=full"]),
    "OFT": dict(network_module="lycoris.kohya", network_args=["algo=diag-oft", "constraint=0.01", "rescaled=True"]),
    "BOFT": dict(network_module="lycoris.kohya", network_args=["algo=boft"]),
}


@pytest.fixture(scope="module")
def sd1_bundle():
    return build_tiny_bundle("sd1")


@pytest.mark.parametrize("kind", list(LYCORIS_TYPES))
def test_every_network_type_is_read_back_for_the_grid(sd1_bundle, tmp_path, kind):
    config = TrainConfig().replace(network_dim=4, network_alpha=2.0, **LYCORIS_TYPES[kind])
    from lib_trainer.networks.registry import find_method

    method = find_method(config)
    settings = method.settings(config)
    network = method.create(sd1_bundle.target_layers(include_conv=method.adapts_conv(settings)), settings)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    path = str(tmp_path / f"{kind}.safetensors")
    network.write_file(path, {**network.file_metadata(), "ss_output_name": kind}, None)

    loaded = network_from_file(path, sd1_bundle)
    assert type(loaded.method) is type(method) and set(loaded.adapters) == set(network.adapters)
    for name, adapter in network.adapters.items():
        expected = adapter.delta_weight()
        assert torch.allclose(loaded.adapters[name].delta_weight(), expected, rtol=1e-5, atol=1e-7), name


def test_a_lycoris_file_in_a_grid_keeps_weight_zero_at_the_base_image(sd1_bundle, tmp_path):
    config = TrainConfig().replace(network_dim=4, network_alpha=4.0, **LYCORIS_TYPES["LoHa"])
    network = create_network(config, sd1_bundle.target_layers(include_conv=True))
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    network.write_file(str(tmp_path / "loha.safetensors"), {**network.file_metadata(), "ss_output_name": "loha"}, None)
    request = GridRequest(files=[None, *saved_files(str(tmp_path))], prompts=["a ball"], weights=[0.0, 1.0],
                          seed=2, steps=2, width=64, height=64)
    grid = standalone_grid(request, sd1_bundle, silent(), device="cpu")
    base = pixels(grid.cell(0, 0).image)
    assert np.array_equal(pixels(grid.cell(0, 1).image), base)
    assert np.abs(pixels(grid.cell(1, 1).image) - base).mean() > 0
