"""Application parts (isvserver.adapters.Part): found by name, enabled by ISV_PARTS, their gauges read at
scrape time like adapters'."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily

from isvserver import create_app, db
from isvserver.adapters import AdapterError, Part, all_parts, enabled_parts, load, load_part, part_names
from isvserver.settings import load_settings

from support.harness import base_env


def test_parts_are_found_by_name() -> None:
    part = load_part("product_api")
    assert isinstance(part, Part) and part.on_by_default
    assert [p.name for p in all_parts()] == ["product_api"]
    with pytest.raises(AdapterError, match="not a part name"):
        load_part("product-api")
    with pytest.raises(AdapterError, match="there is no part 'console9'"):
        load_part("console9")


def test_a_package_without_part_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    monkeypatch.setitem(__import__("sys").modules, "isvserver.parts.empty_probe", types.ModuleType("x"))
    with pytest.raises(AdapterError, match="declares no PART"):
        load_part("empty_probe")


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (None, ("product_api",)),
        ("  ", ("product_api",)),
        ("none", ()),
        ("product_api, product_api", ("product_api",)),
    ],
)
def test_isv_parts_names(raw: str | None, names: tuple[str, ...]) -> None:
    assert part_names(raw) == names


def test_enabled_parts_leave_out_unknown_names() -> None:
    assert [p.name for p in enabled_parts({"ISV_PARTS": "product_api,nope"})] == ["product_api"]
    assert enabled_parts({"ISV_PARTS": "none"}) == ()


def test_gauges_of_adapters_and_parts_are_read_at_scrape_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def gauges():
        yield GaugeMetricFamily("isv_probe_things", "Things the probe part counts", value=7)

    def broken():
        raise RuntimeError("cannot count")

    part = replace(load_part("product_api"), gauges=gauges)
    adapter = replace(load("koogallery"), gauges=broken)
    monkeypatch.setattr("isvserver.web.metrics.load_part", lambda name: part)
    monkeypatch.setattr("isvserver.web.metrics.load", lambda name: adapter)
    settings = load_settings(base_env(tmp_path, f"sqlite:///{tmp_path / 'x.sqlite3'}"))
    from isvserver.migrations import migrate

    database = db.make_database(settings.database_url)
    migrate(database)
    db.close_all(database)
    app = create_app(settings)
    logger = logging.getLogger("isvserver")  # the app set it not to propagate
    logger.addHandler(caplog.handler)
    try:
        text = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        logger.removeHandler(caplog.handler)
    db.close_all()
    assert "isv_probe_things 7.0" in text
    assert "gauges of koogallery could not be read" in caplog.text
