"""Every table the tests empty and inspect: the core's and those of every adapter."""

from __future__ import annotations

from isvserver.adapters import load
from isvserver.models import ALL_MODELS as CORE_MODELS

ADAPTERS = ("koogallery", "koogallery_kit")
ALL_MODELS = (*CORE_MODELS, *(model for name in ADAPTERS for model in load(name).models))

# The migrations this version ships, as schema_version records them and as `migrate` prints them.
SHIPPED = [
    (1, "initial"),
    (2, "access_keys"),
    (3, "jobs"),
    (4, "key_interfaces"),
    (5, "parked_changes"),
    (6, "instance_creation_key"),
    (7, "call_sources"),
    (8, "rejected_call_bounds"),
    (9, "call_delivery"),
    (13, "periodic_jobs"),
    (14, "external_ids"),
]
SHIPPED_ADAPTERS = [("koogallery_kit", 1, "sync")]
LABELS = [
    "0001_initial",
    "0002_access_keys",
    "0003_jobs",
    "0004_key_interfaces",
    "0005_parked_changes",
    "0006_instance_creation_key",
    "0007_call_sources",
    "0008_rejected_call_bounds",
    "0009_call_delivery",
    "0013_periodic_jobs",
    "0014_external_ids",
    "koogallery_kit/0001_sync",
]
