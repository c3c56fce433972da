"""dropout, rank_dropout and module_dropout really drop while training (seeded), and change
nothing in eval mode (sampling, grids, the saved file), for each LyCORIS method that takes them."""
from __future__ import annotations

import pytest
import torch

from lib_trainer.config import TrainConfig
from lib_trainer.networks import registry
from test_lycoris import one_layer, randomise, sample_input

# method -> its network_args, the layer kind it is tried on, the dropouts it takes
ALL = ("dropout", "rank_dropout", "module_dropout")
METHODS = {
    "loha": (["algo=loha"], "conv3x3", ALL),
    "lokr": (["algo=lokr", "factor=4"], "conv3x3", ALL),
    "locon": (["algo=locon"], "conv3x3", ALL),
    "locon-tucker": (["algo=locon", "use_tucker=True"], "conv3x3", ALL),
    "dora": (["algo=locon", "dora_wd=True"], "linear", ALL),
    "full": (["algo=full"], "linear", ALL),
    "oft": (["algo=diag-oft"], "conv1x1", ALL),
    "boft": (["algo=boft"], "linear", ALL),
    "ia3": (["algo=ia3"], "linear", ("module_dropout",)),
}
# methods whose rank dropout drops whole output channels of the weight change (LoCon drops
# ranks of its hidden features instead, per sample; DoRA renormalises after the drop)
DROPS_CHANNELS = {"loha", "lokr", "full", "oft", "boft"}


def network_for(method: str, target, extra: list[str]):
    config = TrainConfig().replace(network_module="lycoris.kohya", network_args=[*METHODS[method][0], *extra],
                                   network_dim=4, network_alpha=2.0, conv_dim=4, conv_alpha=2.0)
    network = registry.create_network(config, [target])
    randomise(network)
    return network


@pytest.mark.parametrize("method,which", [(m, w) for m, (_, _, takes) in METHODS.items() for w in takes])
def test_dropouts_drop_while_training_and_never_in_eval(method, which):
    kind = METHODS[method][1]
    root, target = one_layer(kind)
    x = sample_input(kind)
    plain, dropping = network_for(method, target, []), network_for(method, target, [f"{which}=0.5"])
    if method == "full":  # its bias change is added after the dropouts: look at the weight's
        with torch.no_grad():
            plain.adapters["lora_unet_layer"].diff_b.zero_()
    dropping.load_state_dict(plain.state_dict())  # the same weights, only the dropout differs
    with torch.no_grad():
        base = root.layer(x)
        with plain.eval().attached():
            expected = root.layer(x)
        with dropping.eval().attached():
            assert torch.equal(root.layer(x), expected)  # eval: no dropout at all
        torch.manual_seed(0)
        with dropping.train().attached():
            changes = [root.layer(x) - base for _ in range(8)]
    full_change = expected - base
    assert full_change.abs().min() > 0
    assert any(not torch.allclose(change, full_change) for change in changes), "nothing was dropped"
    if which == "module_dropout":  # the whole layer skipped in some steps, kept whole in others
        assert any(torch.equal(change, torch.zeros_like(change)) for change in changes)
        assert any(torch.allclose(change, full_change) for change in changes)
    elif which == "dropout":  # single features of the change zeroed
        assert any((change == 0).any() and (change != 0).any() for change in changes)
    elif method in DROPS_CHANNELS:  # whole output channels of the change zeroed
        channel_axis = 1
        dropped = [(change.transpose(0, channel_axis).flatten(1).abs().amax(dim=1) == 0) for change in changes]
        assert any(mask.any() and not mask.all() for mask in dropped)


def test_ia3_refuses_the_dropouts_it_cannot_apply():
    for which in ("dropout", "rank_dropout"):
        problems = TrainConfig().replace(network_module="lycoris.kohya",
                                         network_args=["algo=ia3", f"{which}=0.1"]).problems()
        assert any(f"{which} does not apply to algo=ia3" in p for p in problems), problems
