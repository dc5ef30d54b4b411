"""Org tree building and PII masking, without a database."""

from __future__ import annotations

from cryptography.fernet import Fernet

from isvserver.marketplaces.koogallery_kit.pii import UNREADABLE, mask, same_as_stored, seal_optional, shown
from isvserver.marketplaces.koogallery_kit.reads import org_tree


def org(code: str, parent: str | None) -> dict[str, str | None]:
    return {"org_code": code, "org_name": code, "parent_code": parent}


def shape(nodes: list[dict]) -> dict:
    return {n["org_code"]: shape(n["children"]) for n in nodes}


def test_tree_nests_children_and_makes_orphans_roots() -> None:
    tree = org_tree(
        [org("qa", "rd"), org("root", None), org("rd", "root"), org("lost", "nowhere"), org("e", "")]
    )
    assert shape(tree) == {"root": {"rd": {"qa": {}}}, "lost": {}, "e": {}}


def test_cycles_and_self_parents_do_not_loop() -> None:
    tree = org_tree([org("a", "b"), org("b", "a"), org("c", "a"), org("s", "s")])
    assert shape(tree) == {"a": {"c": {}}, "b": {}, "s": {}}


def test_mask_shows_shape_only() -> None:
    assert mask("13912345678") == "1***"
    assert mask("zhang@example.com") == "z***@example.com"
    assert mask("张三") == "张***"
    assert mask("") == "" and mask(None) is None


def test_sealed_comparison_and_display() -> None:
    keys = [Fernet.generate_key()]
    token = seal_optional(keys, "13912345678")
    assert same_as_stored(keys, token, "13912345678")
    assert not same_as_stored(keys, token, "13900000000")
    assert not same_as_stored(keys, token, None) and same_as_stored(keys, None, None)
    assert not same_as_stored([Fernet.generate_key()], token, "13912345678")  # unreadable: reseal
    assert shown(keys, token, True) == "13912345678" and shown(keys, token, False) == "1***"
    assert shown([Fernet.generate_key()], token, True) == UNREADABLE
    assert seal_optional(keys, None) is None
