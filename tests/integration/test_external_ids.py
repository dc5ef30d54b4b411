"""An external id outside the instance id's charset is kept whole beside the id derived from it."""

from __future__ import annotations

import uuid

from flask import Flask

from isvserver import db, lifecycle
from isvserver.models import ExternalId, Instance

ODD = "order/2024 #7 — ü" + "x" * 80  # a slash, spaces, non-ASCII, and longer than 64


def create(app: Flask, key: str, proposed: str, marketplace: str = "platform") -> tuple[Instance, bool]:
    with app.app_context(), db.connected():
        creation = app.extensions["isvserver"].lifecycle.create(marketplace, key, proposed)
    return creation.instance, creation.changed


def test_an_id_that_fits_is_the_instance_id_and_nothing_is_kept_beside_it(app: Flask) -> None:
    instance, created = create(app, "order:1", "d9ae2543-3185-4839-bc56-f885aa879881")

    assert created
    assert instance.instance_id == "d9ae2543-3185-4839-bc56-f885aa879881"
    with db.connected():
        assert lifecycle.external_id_of(instance.instance_id) is None
        assert ExternalId.select().count() == 0


def test_an_id_that_does_not_fit_gets_a_derived_uuid_and_is_kept_whole(app: Flask) -> None:
    instance, created = create(app, "order:2", ODD)
    again, created_again = create(app, "order:2", ODD)

    assert (created, created_again) == (True, False)
    assert again.instance_id == instance.instance_id
    assert str(uuid.UUID(instance.instance_id)) == instance.instance_id
    assert instance.instance_id == lifecycle.instance_id_for("platform", ODD)[0]  # the same every time
    with db.connected():
        assert lifecycle.external_id_of(instance.instance_id) == ODD
        assert [(r.marketplace, r.external_id) for r in ExternalId.select()] == [("platform", ODD)]


def test_the_derived_id_depends_on_the_marketplace(app: Flask) -> None:
    first, _ = create(app, "order:3", ODD, marketplace="one")
    second, _ = create(app, "order:3", ODD, marketplace="two")

    assert first.instance_id != second.instance_id
    with db.connected():
        assert lifecycle.external_id_of(first.instance_id) == lifecycle.external_id_of(second.instance_id)


def test_a_derived_id_already_taken_falls_back_to_a_new_uuid_and_still_keeps_the_external_id(
    app: Flask,
) -> None:
    derived, _ = lifecycle.instance_id_for("platform", ODD)
    taken, _ = create(app, "order:4", derived)  # another creation took that id first

    instance, created = create(app, "order:5", ODD)

    assert created
    assert taken.instance_id == derived
    assert instance.instance_id not in (derived, ODD)
    with db.connected():
        assert lifecycle.external_id_of(instance.instance_id) == ODD


def test_an_empty_proposal_gets_a_random_uuid_and_keeps_nothing(app: Flask) -> None:
    instance, _ = create(app, "order:6", "")

    assert str(uuid.UUID(instance.instance_id)) == instance.instance_id
    with db.connected():
        assert lifecycle.external_id_of(instance.instance_id) is None
