"""Every table the tests empty and inspect: the core's and those of every adapter."""

from __future__ import annotations

from isvserver.adapters import load
from isvserver.models import ALL_MODELS as CORE_MODELS

ADAPTERS = ("koogallery", "koogallery_kit", "broker")
ALL_MODELS = (*CORE_MODELS, *(model for name in ADAPTERS for model in load(name).models))
