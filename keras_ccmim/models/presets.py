"""Named architectures: ViT-T/4 at 32 px to ViT-H/14, with their decoders."""

from __future__ import annotations

import copy
from typing import Any

# The encoder's size arguments a preset fixes and a run may override.
ENCODER_SIZE_FIELDS = ("image_size", "patch_size", "hidden_dim", "num_layers", "num_heads")

_MAE_DECODER = {"hidden_dim": 512, "num_layers": 8, "num_heads": 16}

PRESETS = {
    # CIFAR-sized: ViT-T/4 (192 wide, 12 blocks, 3 heads), 128 x 2 decoder.
    "vit_tiny_patch4_32": {
        "encoder": dict(image_size=32, patch_size=4, hidden_dim=192, num_layers=12, num_heads=3),
        "decoder": {"hidden_dim": 128, "num_layers": 2, "num_heads": 4},
    },
    "vit_small_patch16_224": {
        "encoder": dict(image_size=224, patch_size=16, hidden_dim=384, num_layers=12, num_heads=6),
        "decoder": dict(_MAE_DECODER),
    },
    "vit_base_patch16_224": {
        "encoder": dict(image_size=224, patch_size=16, hidden_dim=768, num_layers=12, num_heads=12),
        "decoder": dict(_MAE_DECODER),
    },
    "vit_large_patch16_224": {
        "encoder": dict(image_size=224, patch_size=16, hidden_dim=1024, num_layers=24, num_heads=16),
        "decoder": dict(_MAE_DECODER),
    },
    "vit_huge_patch14_224": {
        "encoder": dict(image_size=224, patch_size=14, hidden_dim=1280, num_layers=32, num_heads=16),
        "decoder": dict(_MAE_DECODER),
    },
}

# big_vision-style variant strings.
ALIASES = {
    "T/4": "vit_tiny_patch4_32",
    "S/16": "vit_small_patch16_224",
    "B/16": "vit_base_patch16_224",
    "L/16": "vit_large_patch16_224",
    "H/14": "vit_huge_patch14_224",
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> dict[str, dict[str, Any]]:
    """`{"encoder": {...}, "decoder": {...}}` for a preset name or alias."""
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(preset_names())} "
            f"(or the aliases {', '.join(sorted(ALIASES))})."
        )
    return copy.deepcopy(PRESETS[key])
