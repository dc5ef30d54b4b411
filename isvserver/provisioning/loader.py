"""ISV_PROVISIONER: template, webhook or python:package.module:Class, turned into a Provisioner."""

from __future__ import annotations

import base64
import importlib
import secrets
from typing import Any

from isvserver.provisioning import AppInfo, InstanceView, LifecycleEvent, Provisioner
from isvserver.provisioning.template import TemplateProvisioner
from isvserver.provisioning.webhook import WebhookProvisioner
from isvserver.settings import Settings, SettingsError

REQUIRED_METHODS = ("provision", "apply", "check_change")


def generate_webhook_secret() -> str:
    """A fresh ISV_WEBHOOK_SECRET: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class _NotInline:
    """Wraps a provisioner whose class declares no `inline` (and takes no new attribute): not inline."""

    inline = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        if callable(getattr(inner, "sync", None)):
            self.sync = inner.sync  # it opted in to the adapters' events

    def __repr__(self) -> str:
        return repr(self.inner)

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """The wrapped provisioner's provision."""
        return self.inner.provision(event)

    def apply(self, event: LifecycleEvent) -> None:
        """The wrapped provisioner's apply."""
        self.inner.apply(event)

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        """The wrapped provisioner's check_change."""
        return self.inner.check_change(instance, product_info)


def _load_class(spec: str) -> Provisioner:
    """An instance of the class named by `python:package.module:Class`, or SettingsError."""
    _, module_name, class_name = spec.split(":", 2)
    where = f"ISV_PROVISIONER={spec}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and module_name[len(exc.name) :][:1] in ("", "."):
            raise SettingsError(f"{where}: there is no module {module_name} (is it installed?)") from None
        raise SettingsError(f"{where}: importing module {module_name} failed: {exc}") from None
    except Exception as exc:
        raise SettingsError(
            f"{where}: importing module {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in class_name.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SettingsError(f"{where}: module {module_name} has no class {class_name}")
    if not isinstance(target, type):
        raise SettingsError(f"{where}: {module_name}.{class_name} is not a class")
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(target, name, None))]
    if missing:
        raise SettingsError(
            f"{where}: class {class_name} lacks {', '.join(missing)} "
            f"(a provisioner needs {', '.join(REQUIRED_METHODS)})"
        )
    try:
        provisioner = target()
    except Exception as exc:
        raise SettingsError(
            f"{where}: {class_name}() failed (it is created without arguments): {type(exc).__name__}: {exc}"
        ) from None
    if not hasattr(provisioner, "inline"):
        try:
            provisioner.inline = False
        except (AttributeError, TypeError):
            return _NotInline(provisioner)
    return provisioner


def load_provisioner(settings: Settings) -> Provisioner:
    """The provisioner ISV_PROVISIONER chooses, built from the settings; SettingsError when it cannot be."""
    choice = settings.provisioner
    if choice == "template":
        return TemplateProvisioner(settings.frontend_url_template, settings.admin_url_template)
    if choice == "webhook":
        try:
            return WebhookProvisioner(
                settings.webhook_url, settings.webhook_secret, settings.webhook_timeout_s
            )
        except ValueError as exc:
            raise SettingsError(f"ISV_PROVISIONER=webhook: {exc}") from None
    if choice.startswith("python:") and choice.count(":") == 2 and all(choice.split(":")[1:]):
        return _load_class(choice)
    raise SettingsError("ISV_PROVISIONER must be template, webhook or python:package.module:Class")
