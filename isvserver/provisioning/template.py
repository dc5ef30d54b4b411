"""The built-in provisioner: URLs from configured templates, a generated admin account."""

from __future__ import annotations

import secrets
import string
from typing import Any
from urllib.parse import quote

from isvserver.provisioning import AppInfo, InstanceView, LifecycleEvent, ProvisioningError

PASSWORD_LENGTH = 20
PASSWORD_SYMBOLS = "!@#%^*-_=+"  # noqa: S105 (an alphabet, not a password)
USER_NAME_SUFFIX = 8


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password with upper, lower, digit and symbol characters."""
    alphabet = string.ascii_letters + string.digits + PASSWORD_SYMBOLS
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(c in PASSWORD_SYMBOLS for c in password)
        ):
            return password


def generate_user_name() -> str:
    """An admin user name such as `admin_k3f9x2ab`."""
    alphabet = string.ascii_lowercase + string.digits
    return "admin_" + "".join(secrets.choice(alphabet) for _ in range(USER_NAME_SUFFIX))


def path_segment(value: str) -> str:
    """`value` percent-encoded as one URL path segment: `/`, `?`, `#`… and the dots of `.`/`..` too."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def render_url(template: str, instance: InstanceView) -> str:
    """`template` with {instance_id}, {order_id} and {order_line_id} filled in, each percent-encoded (an
    instance without an order line fills those with nothing)."""
    url = template.format(
        instance_id=path_segment(instance.instance_id),
        order_id=path_segment(instance.order_id or ""),
        order_line_id=path_segment(instance.order_line_id or ""),
    )
    if len(url) > 512:
        raise ProvisioningError("the rendered URL is longer than the marketplace's 512 characters")
    return url


class TemplateProvisioner:
    """Answers at once: URLs rendered from templates and a fresh admin user name and password."""

    inline = True

    def __init__(self, frontend_url_template: str, admin_url_template: str = "") -> None:
        self.frontend_url_template = frontend_url_template
        self.admin_url_template = admin_url_template

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """Render the URLs and generate the admin account."""
        instance = event.instance
        return AppInfo(
            front_end_url=render_url(self.frontend_url_template, instance),
            admin_url=render_url(self.admin_url_template, instance) if self.admin_url_template else None,
            user_name=generate_user_name(),
            password=generate_password(),
        )

    def apply(self, event: LifecycleEvent) -> None:
        """A template tenant lives in the product already: there is nothing to carry out."""

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        """A template tenant has no capacity limits: every renewal change is acceptable."""
        return None
