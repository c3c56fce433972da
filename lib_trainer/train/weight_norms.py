"""scale_weight_norms: kohya's max-norm regularisation, after every optimizer step.

Each LoRA layer whose weight change (up @ down * alpha / dim) has a Frobenius norm above the
value has up and down scaled alike to bring it back to it; a layer cannot drift far from the
base model however large its gradients. What it did goes into the step's progress info under
kohya's names: how many layers were scaled, and the mean and largest norm afterwards.
"""
from __future__ import annotations


def apply_max_norm(trainable, max_norm: float | None) -> dict[str, float]:
    """Scale every adapter with `scale_to_max_norm` (networks.lora's); returns the step's info."""
    if not max_norm:
        return {}
    scaled, norms = 0, []
    for module in trainable.modules():
        if hasattr(module, "scale_to_max_norm"):
            was_scaled, norm = module.scale_to_max_norm(max_norm)
            scaled += was_scaled
            norms.append(norm)
    if not norms:
        return {}
    return {"keys_scaled": scaled, "avg_key_norm": sum(norms) / len(norms), "max_key_norm": max(norms)}
