"""What `isvserver instances show` tells of a V1 instance: its buyer (names and contacts masked) and its
license (state, version, expiry; never the token)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from isvserver.adapters import Section
from isvserver.cli.helpers import MASK, print_table
from isvserver.marketplaces.koogallery.v1.models import License, V1Buyer
from isvserver.models import Instance
from isvserver.settings import Settings

BUYER_SEALED = ("customer_name_sealed", "user_name_sealed", "mobile_phone_sealed", "email_sealed")


def buyer_out(row: V1Buyer) -> dict[str, Any]:
    """The buyer's ids, and which sealed fields are stored (each shown only as a mask)."""
    out: dict[str, Any] = {"customer_id": row.customer_id, "user_id": row.user_id}
    for name in BUYER_SEALED:
        out[name.removesuffix("_sealed")] = MASK if getattr(row, name) else None
    return out


def license_out(row: License) -> dict[str, Any]:
    """The license's id, SKU, state, version and expiry."""
    return {
        "license_id": row.license_id,
        "sku_code": row.sku_code,
        "state": row.state,
        "version": row.version,
        "expire_at": row.expire_at,
        "updated_at": row.updated_at,
    }


def _buyer_table(rows: Sequence[dict[str, Any]]) -> None:
    print_table(tuple(rows[0]) if rows else ("customer_id",), (tuple(r.values()) for r in rows))


def _license_table(rows: Sequence[dict[str, Any]]) -> None:
    print_table(tuple(rows[0]) if rows else ("license_id",), (tuple(r.values()) for r in rows))


def v1_sections(instance: Instance, settings: Settings) -> tuple[Section, ...]:
    """The V1 buyer and the license of an instance, when it has them."""
    sections = []
    buyer = V1Buyer.get_or_none(V1Buyer.instance_id == instance.instance_id)
    if buyer is not None:
        sections.append(Section("v1_buyer", "V1 buyer (masked)", [buyer_out(buyer)], _buyer_table))
    found = License.get_or_none(License.instance_id == instance.instance_id)
    if found is not None:
        sections.append(Section("license", "license", [license_out(found)], _license_table))
    return tuple(sections)
