"""The platform client against the local platform: paging, timeouts, retries, errors without secrets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from isvserver.marketplaces.vcloud.client import PlatformClient, PlatformError
from isvserver.marketplaces.vcloud.config import VCloudSettings

from support.server import free_port
from support.vcloud_platform import TOKEN, WALLET, VCloudPlatform


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[VCloudPlatform]:
    with VCloudPlatform(tmp_path / "platform.sqlite3") as running:
        yield running


def settings_for(url: str, **changes: object) -> VCloudSettings:
    base = VCloudSettings(
        api_url=url, wallet=WALLET, api_token=TOKEN, api_host="https://isv.example.com", page_size=2
    )
    return dataclasses.replace(base, **changes)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(platform: VCloudPlatform, **changes: object) -> tuple[PlatformClient, Sleeps]:
    sleeps = Sleeps()
    return PlatformClient(settings_for(platform.url, **changes), sleep=sleeps), sleeps


def test_listings_follow_every_page(platform: VCloudPlatform) -> None:
    added = [platform.add_order() for _ in range(5)]
    client, _ = client_for(platform)

    found = client.orders(recipient=WALLET)

    assert [o["id"] for o in found] == [o["id"] for o in added]
    pages = [r["query"] for r in platform.requests("/api/v1/order")]
    assert [("current=1" in q, "current=2" in q, "current=3" in q) for q in pages] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ]
    assert all("pageSize=2" in q for q in pages)


def test_an_empty_listing_is_one_request(platform: VCloudPlatform) -> None:
    client, _ = client_for(platform)
    assert client.providers(name="nobody") == []
    assert len(platform.requests("/api/v1/service/provider")) == 1


def test_reads_are_retried_on_5xx_with_growing_backoff(platform: VCloudPlatform) -> None:
    order = platform.add_order()
    platform.fail_next(2, status=502)
    client, sleeps = client_for(platform, retries=3)

    assert client.order(order["id"])["id"] == order["id"]
    assert len(platform.requests("/api/v1/order/id/")) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2 and 0 < sleeps[0] <= 0.5


def test_reads_give_up_after_their_retries_naming_endpoint_and_status(platform: VCloudPlatform) -> None:
    platform.fail_next(10, status=503)
    client, sleeps = client_for(platform, retries=2)

    with pytest.raises(PlatformError) as caught:
        client.orders(recipient=WALLET)

    assert str(caught.value) == "V Cloud GET /api/v1/order: HTTP 503"
    assert caught.value.status == 503
    assert len(sleeps) == 2
    assert TOKEN not in str(caught.value)


def test_a_write_the_platform_may_have_applied_is_not_sent_twice(platform: VCloudPlatform) -> None:
    platform.fail_next(1, status=500, path_prefix="/api/v1/service/provider")
    client, sleeps = client_for(platform, retries=3)

    with pytest.raises(PlatformError, match=r"^V Cloud POST /api/v1/service/provider: HTTP 500$"):
        client.create_provider({"name": "p", "id": "p", "walletAddress": WALLET, "apiHost": "h"})

    assert len(platform.requests("/api/v1/service/provider")) == 1
    assert sleeps == []


def test_4xx_answers_are_errors_at_once(platform: VCloudPlatform) -> None:
    client, sleeps = client_for(platform, api_token="")
    with pytest.raises(PlatformError, match="HTTP 401"):
        client.create_provider({"name": "p", "id": "p", "walletAddress": WALLET, "apiHost": "h"})
    assert sleeps == []


def test_the_token_goes_as_a_bearer_header_and_never_into_an_error(platform: VCloudPlatform) -> None:
    client, _ = client_for(platform)
    client.create_provider({"name": "p", "id": "p", "walletAddress": WALLET, "apiHost": "h"})
    platform.fail_next(1, status=409, path_prefix="/api/v1/service/provider")
    with pytest.raises(PlatformError) as caught:
        client.create_provider({"name": "p", "id": "p", "walletAddress": WALLET, "apiHost": "h"})
    assert platform.requests("/api/v1/service/provider")[0]["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(caught.value) and "Bearer" not in repr(client.settings)


def test_a_platform_that_cannot_be_reached_is_retried_then_named(tmp_path: Path) -> None:
    sleeps = Sleeps()
    client = PlatformClient(settings_for(f"http://127.0.0.1:{free_port()}", retries=2), sleep=sleeps)

    with pytest.raises(
        PlatformError, match=r"^V Cloud GET /api/v1/order: connection refused or unreachable$"
    ):
        client.orders(recipient=WALLET)
    with pytest.raises(PlatformError, match="connection refused"):
        client.create_category({"provider": "p", "name": "c"})  # never sent: safe to try again
    assert len(sleeps) == 4


def test_a_slow_platform_times_out(platform: VCloudPlatform) -> None:
    platform.hold_page(1)
    client, _ = client_for(platform, timeout_s=1, retries=0)
    try:
        with pytest.raises(PlatformError, match=r"^V Cloud GET /api/v1/order: timed out$"):
            client.orders_page(1, recipient=WALLET)
    finally:
        platform.release_hold()


def test_a_dropped_connection_is_retried(platform: VCloudPlatform) -> None:
    platform.add_order()
    platform.fail_next(1, status=0)
    client, sleeps = client_for(platform, retries=1)
    assert len(client.orders(recipient=WALLET)) == 1
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("<html>gateway</html>", "the answer is not JSON"),
        ('{"list": "nope"}', "the answer is not a page"),
        ('{"list": [], "pagination": {"total": -1}}', "the answer is not a page"),
    ],
)
def test_garbage_is_an_error_naming_the_endpoint(platform: VCloudPlatform, raw: str, reason: str) -> None:
    platform.fail_next(1, status=200, raw=raw)
    client, _ = client_for(platform)
    with pytest.raises(PlatformError, match=rf"^V Cloud GET /api/v1/order: HTTP 200 \({reason}"):
        client.orders()


def test_one_item_by_id_or_none(platform: VCloudPlatform) -> None:
    client, _ = client_for(platform)
    client.create_provider({"name": "p", "id": "p", "walletAddress": WALLET, "apiHost": "h"})
    client.create_category({"provider": "p", "name": "c"})
    category = client.categories(provider="p")[0]

    assert client.provider("p")["walletAddress"] == WALLET
    assert client.provider("nobody") is None
    assert client.category(category["categoryID"])["name"] == "c"
    assert client.order("no-such-order") is None
    platform.fail_next(1, status=200, raw="[1, 2]", path_prefix="/api/v1/service/provider/")
    with pytest.raises(PlatformError, match="not an object"):
        client.provider("p")


def test_services_are_created_on_the_type_path_or_the_seeds_printed_path(platform: VCloudPlatform) -> None:
    client, _ = client_for(platform)
    client.create_provider({"name": "p", "id": "p", "walletAddress": WALLET, "apiHost": "h"})
    client.create_category({"provider": "p", "name": "c"})
    category_id = client.categories(provider="p")[0]["categoryID"]
    body = {
        "name": "s1",
        "durationToPrice": [{"price": 1}],
        "provider": "p",
        "refundable": True,
        "categoryID": category_id,
        "category": "c",
    }
    client.create_service(body)
    platform.fail_next(1, status=404, path_prefix="/api/v1/service/type")  # a platform without it
    client.create_service({**body, "name": "s2"})
    platform.fail_next(1, status=500, path_prefix="/api/v1/service/type")
    with pytest.raises(PlatformError, match="HTTP 500"):
        client.create_service({**body, "name": "s3"})

    assert [s["name"] for s in client.services(provider="p")] == ["s1", "s2"]
    posts = [r["path"] for r in platform.requests("/api/v1/service") if r["method"] == "POST"]
    assert posts[-4:] == [
        "/api/v1/service/type",
        "/api/v1/service/type",
        "/api/v1/service/category",
        "/api/v1/service/type",
    ]


def test_a_template_is_uploaded_as_the_body_of_a_get(platform: VCloudPlatform) -> None:
    client, _ = client_for(platform)
    assert client.upload_template("provider:\n  name: p\n") == {"received": True}
    assert platform.query("SELECT body FROM template") == [("provider:\n  name: p\n",)]


def test_an_empty_answer_is_none(platform: VCloudPlatform) -> None:
    platform.fail_next(1, status=200, raw="", path_prefix="/api/v1/service/provider")
    client, _ = client_for(platform)
    assert client.create_provider({"name": "p"}) is None
