"""Every table the tests empty and inspect: the core's and those of every adapter."""

from __future__ import annotations

from isvserver.adapters import load, load_part
from isvserver.models import ALL_MODELS as CORE_MODELS

ADAPTERS = ("koogallery", "koogallery_kit")
PARTS = ("product_api",)
ALL_MODELS = (
    *CORE_MODELS,
    *(model for name in ADAPTERS for model in load(name).models),
    *(model for name in PARTS for model in load_part(name).models),
)
