"""The service template `isvserver vcloud register` reads: a YAML file with the provider, its
categories and their services, in the platform's own field names (spec §1).

    provider: {name, apiHost?, walletAddress?}      apiHost, walletAddress: else the settings
    categories:
      - {name, description?, serviceOptions?: {option: [values]}, apiHost?,
         services: [{name, refundable, durationToPrice: [{price, chargingOptions?, duration?}],
                     description?, serviceOptions?, serviceAPI?, apiHost?}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from isvserver.calls import describe

NAME = validate.Length(min=1, max=128)
TEXT = validate.Length(max=4096)
MAX_BYTES = 1024 * 1024


class TemplateError(ValueError):
    """The template cannot be used; the message says where and why."""


def _options() -> fields.Dict:
    return fields.Dict(keys=fields.String(validate=NAME), values=fields.List(fields.String(validate=NAME)))


class PriceIn(Schema):
    """One base price per hour, the charging options it applies to, the discounts by hours bought."""

    price = fields.Float(required=True, validate=validate.Range(min=0))
    chargingOptions = fields.Dict(keys=fields.String(validate=NAME), values=fields.String(validate=NAME))
    duration = fields.Dict(
        keys=fields.Integer(strict=False, validate=validate.Range(min=1)),
        values=fields.Float(validate=validate.Range(min=0, max=1)),
    )


class ServiceApiIn(Schema):
    """What the buyer may call once the service is bought."""

    start = fields.String(validate=TEXT)
    stop = fields.String(validate=TEXT)
    refund = fields.String(validate=TEXT)
    normal = fields.Dict(keys=fields.String(validate=NAME), values=fields.String(validate=TEXT))
    secret = fields.Dict(keys=fields.String(validate=NAME), values=fields.String(validate=TEXT))


class ServiceIn(Schema):
    """A service of a category."""

    name = fields.String(required=True, validate=NAME)
    refundable = fields.Boolean(required=True)
    durationToPrice = fields.List(fields.Nested(PriceIn), required=True, validate=validate.Length(min=1))
    description = fields.String(validate=TEXT)
    serviceOptions = _options()
    serviceAPI = fields.Nested(ServiceApiIn)
    apiHost = fields.String(validate=TEXT)


class CategoryIn(Schema):
    """A category of the provider and its services."""

    name = fields.String(required=True, validate=NAME)
    description = fields.String(validate=TEXT)
    serviceOptions = _options()
    apiHost = fields.String(validate=TEXT)
    services = fields.List(fields.Nested(ServiceIn), load_default=list)

    @validates_schema
    def unique_services(self, data: dict[str, Any], **kwargs: Any) -> None:
        """A service name once per category."""
        names = [service["name"] for service in data.get("services", [])]
        if len(set(names)) != len(names):
            raise ValidationError("a service name is listed twice", "services")


class ProviderIn(Schema):
    """The provider (its name is its id on the platform)."""

    name = fields.String(required=True, validate=NAME)
    apiHost = fields.String(validate=TEXT)
    walletAddress = fields.String(validate=validate.Length(min=1, max=64))


class TemplateIn(Schema):
    """The whole template."""

    class Meta:
        unknown = EXCLUDE

    provider = fields.Nested(ProviderIn, required=True)
    categories = fields.List(fields.Nested(CategoryIn), load_default=list)

    @validates_schema
    def unique_categories(self, data: dict[str, Any], **kwargs: Any) -> None:
        """A category name once per provider."""
        names = [category["name"] for category in data.get("categories", [])]
        if len(set(names)) != len(names):
            raise ValidationError("a category name is listed twice", "categories")


@dataclass(frozen=True)
class Template:
    """A validated service template."""

    provider: dict[str, Any]
    categories: list[dict[str, Any]]


def load(text: str) -> Template:
    """The template in `text` (YAML), or TemplateError naming what is wrong."""
    if len(text.encode()) > MAX_BYTES:
        raise TemplateError(f"the template is larger than {MAX_BYTES} bytes")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise TemplateError(f"the template is not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise TemplateError("the template must be a mapping with `provider` and `categories`")
    try:
        data = TemplateIn().load(raw)
    except ValidationError as exc:
        raise TemplateError(f"the template is invalid: {describe(exc.messages, 500)}") from None
    return Template(provider=data["provider"], categories=data["categories"])
