"""The product API: the seller's product reports usage (POST /v1/usage) with a Bearer product token."""

from __future__ import annotations

from isvserver.adapters import Mount, Part
from isvserver.parts.product_api.cli import product_token
from isvserver.parts.product_api.openapi import paths
from isvserver.parts.product_api.tokens import ProductToken
from isvserver.parts.product_api.views import MAX_BODY_BYTES, bp

PREFIX = "/v1"

PART = Part(
    name="product_api",
    mounts=(Mount(bp, lambda settings: PREFIX, max_body_bytes=MAX_BODY_BYTES),),
    on_by_default=True,
    cli_commands=(product_token,),
    openapi=paths,
    models=(ProductToken,),
)
