"""Every table the tests empty and inspect: the core's and those of every adapter."""

from __future__ import annotations

from isvserver.adapters import load, load_part
from isvserver.models import ALL_MODELS as CORE_MODELS

ADAPTERS = ("broker", "koogallery", "koogallery_kit", "vcloud")
PARTS = ("product_api",)
ALL_MODELS = (
    *CORE_MODELS,
    *(model for name in ADAPTERS for model in load(name).models),
    *(model for name in PARTS for model in load_part(name).models),
)

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
    (16, "usage"),
]
SHIPPED_ADAPTERS = [
    ("broker", 1, "broker"),
    ("koogallery", 1, "v1"),
    ("koogallery_kit", 1, "sync"),
    ("koogallery_kit", 2, "sso"),
    ("product_api", 1, "product_tokens"),
    ("vcloud", 1, "orders"),
]
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
    "0016_usage",
    "broker/0001_broker",
    "koogallery/0001_v1",
    "koogallery_kit/0001_sync",
    "koogallery_kit/0002_sso",
    "product_api/0001_product_tokens",
    "vcloud/0001_orders",
]
