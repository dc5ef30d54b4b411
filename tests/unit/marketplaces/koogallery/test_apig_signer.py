"""The API-Gateway AK/SK signer of spec §10: the known answer and each canonicalisation rule."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from isvserver.marketplaces.koogallery import apig_signer
from isvserver.marketplaces.koogallery.apig_signer import (
    body_hash,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri,
    sign_request,
)

KNOWN_URL = "https://mkt.myhuaweicloud.com/api/mkp-openapi-public/global/v1/license/activate"
KNOWN_HEADERS = {
    "x-stage": "RELEASE",
    "X-Sdk-Date": "20240317T144237Z",
    "Content-Type": "application/json",
    "host": "mkt.myhuaweicloud.com",
}
KNOWN_SIGNATURE = "77595ad624b6e4e49990b8c4e84bf1c287457fca61069c4e60b9b6765b52053d"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_known_answer() -> None:
    sent = sign_request("POST", KNOWN_URL, KNOWN_HEADERS, b"", "my-ak", "123")
    assert sent["Authorization"] == (
        "SDK-HMAC-SHA256 Access=my-ak, SignedHeaders=content-type;host;x-sdk-date;x-stage, "
        f"Signature={KNOWN_SIGNATURE}"
    )
    assert {k: v for k, v in sent.items() if k != "Authorization"} == KNOWN_HEADERS


def test_known_answer_canonical_request_and_string_to_sign() -> None:
    canonical = canonical_request("post", KNOWN_URL, KNOWN_HEADERS, "")
    assert canonical == (
        "POST\n/api/mkp-openapi-public/global/v1/license/activate/\n\n"
        "content-type:application/json\nhost:mkt.myhuaweicloud.com\nx-sdk-date:20240317T144237Z\n"
        "x-stage:RELEASE\n\ncontent-type;host;x-sdk-date;x-stage\n" + EMPTY_SHA256
    )
    to_sign = apig_signer.string_to_sign(canonical, "20240317T144237Z")
    assert to_sign == ("SDK-HMAC-SHA256\n20240317T144237Z\n" + hashlib.sha256(canonical.encode()).hexdigest())
    assert apig_signer.signature("123", to_sign) == KNOWN_SIGNATURE


def test_the_known_answer_needs_the_trailing_slash() -> None:
    canonical = canonical_request("POST", KNOWN_URL, KNOWN_HEADERS, b"")
    without_slash = canonical.replace("/activate/\n", "/activate\n")
    to_sign = apig_signer.string_to_sign(without_slash, "20240317T144237Z")
    assert apig_signer.signature("123", to_sign) != KNOWN_SIGNATURE


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "/"),
        ("/", "/"),
        ("/v1/order/query", "/v1/order/query/"),
        ("/v1/order/query/", "/v1/order/query/"),
        ("/v1/a%20b/c", "/v1/a%20b/c/"),
        ("/v1/a b", "/v1/a%20b/"),
        ("/v1/%e9%87%8d/x", "/v1/%E9%87%8D/x/"),
        ("/v1/重", "/v1/%E9%87%8D/"),
        ("/v1/a-b_c.d~e", "/v1/a-b_c.d~e/"),
        ("/v1/a+b:c", "/v1/a%2Bb%3Ac/"),
    ],
)
def test_path_is_reencoded_and_ends_with_a_slash(path: str, expected: str) -> None:
    assert canonical_uri(path) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("orderLineId=X-000001&orderId=X", "orderId=X&orderLineId=X-000001"),
        ("b=2&a=1&a=0", "a=0&a=1&b=2"),
        ("flag&x=", "flag=&x="),
        ("q=a%20b&r=a+b", "q=a%20b&r=a%2Bb"),
        ("id=%7e~%2F/", "id=~~%2F%2F"),
        ("name=%E9%87%8D", "name=%E9%87%8D"),
        ("name=重", "name=%E9%87%8D"),
        ("&&a=1&", "a=1"),
        ("B=1&a=1", "B=1&a=1"),  # sorted by code point: upper case first
    ],
)
def test_query_is_decoded_sorted_and_reencoded(query: str, expected: str) -> None:
    assert canonical_query(query) == expected


def test_headers_are_lower_cased_trimmed_and_sorted() -> None:
    lines, signed = canonical_headers(
        {"X-Stage": "  RELEASE \t", "Host": "mkt.myhuaweicloud.com", "content-TYPE": "application/json"}
    )
    assert lines == "content-type:application/json\nhost:mkt.myhuaweicloud.com\nx-stage:RELEASE\n"
    assert signed == "content-type;host;x-stage"


def test_header_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        canonical_headers({"Host": "a", "host": "b"})


def test_body_hash() -> None:
    assert body_hash(b"") == EMPTY_SHA256
    assert body_hash('{"name":"重"}') == hashlib.sha256('{"name":"重"}'.encode()).hexdigest()
    assert canonical_request("POST", "https://h/p", {"Host": "h"}, b"{}").endswith(
        "\n" + hashlib.sha256(b"{}").hexdigest()
    )


def test_body_changes_the_signature() -> None:
    one = sign_request("POST", KNOWN_URL, KNOWN_HEADERS, b"{}", "ak", "123")
    other = sign_request("POST", KNOWN_URL, KNOWN_HEADERS, b"{ }", "ak", "123")
    assert one["Authorization"] != other["Authorization"]


def test_host_and_date_are_added_and_the_input_is_left_alone() -> None:
    headers = {"Content-Type": "application/json"}
    now = datetime(2024, 3, 17, 22, 42, 37, tzinfo=timezone(timedelta(hours=8)))
    sent = sign_request("GET", "http://127.0.0.1:8080/a?b=1", headers, b"", "ak", "sk", now)
    assert sent["Host"] == "127.0.0.1:8080"
    assert sent["X-Sdk-Date"] == "20240317T144237Z"
    assert "SignedHeaders=content-type;host;x-sdk-date," in sent["Authorization"]
    assert headers == {"Content-Type": "application/json"}


def test_a_naive_now_is_utc_and_the_default_is_the_clock() -> None:
    naive = sign_request("GET", "https://h/", {}, b"", "ak", "sk", datetime(2024, 3, 17, 14, 42, 37))
    assert naive["X-Sdk-Date"] == "20240317T144237Z"
    sent = sign_request("GET", "https://h/", {}, b"", "ak", "sk")
    stamped = datetime.strptime(sent["X-Sdk-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(stamped - datetime.now(UTC)) < timedelta(minutes=1)


def test_an_old_authorization_header_is_replaced_not_signed() -> None:
    headers = {**KNOWN_HEADERS, "Authorization": "stale"}
    sent = sign_request("POST", KNOWN_URL, headers, b"", "my-ak", "123")
    assert sent["Authorization"].endswith(f"Signature={KNOWN_SIGNATURE}")


def test_the_secret_key_is_not_in_the_headers() -> None:
    sk = "a-very-secret-key-value"
    sent = sign_request("GET", "https://h/p?x=1", {}, b"", "ak", sk)
    assert not any(sk in value for value in sent.values())
