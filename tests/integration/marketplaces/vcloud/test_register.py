"""`isvserver vcloud register TEMPLATE.yaml` against the local platform: idempotent, a plan, differences."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.vcloud_platform import API_HOST, TOKEN, VCloudPlatform, run_cli, vcloud_env

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "vcloud-service-template.yaml"


@pytest.fixture
def cli_env(tmp_path: Path, platform: VCloudPlatform) -> dict[str, str]:
    """Development settings for the CLI (no database is needed to register)."""
    return {"ISV_INSTANCE_DIR": str(tmp_path / "instance"), **vcloud_env(platform)}


def counts(platform: VCloudPlatform) -> tuple[int, int, int]:
    return tuple(len(platform.bodies(t)) for t in ("provider", "category", "service"))  # type: ignore[return-value]


def test_registering_twice_creates_once(cli_env: dict[str, str], platform: VCloudPlatform) -> None:
    first = run_cli(cli_env, "vcloud", "register", str(EXAMPLE))
    second = run_cli(cli_env, "vcloud", "register", str(EXAMPLE))

    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        "provider 'acme-notes': created",
        "category 'Team-Notes': created",
        "service 'Team Notes' in 'Team-Notes': created",
        "3 created, 0 as the template says, 0 differ",
    ]
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[-1] == "0 created, 3 as the template says, 0 differ"
    assert counts(platform) == (1, 1, 1)
    [provider] = platform.bodies("provider")
    assert (provider["id"], provider["apiHost"], provider["walletAddress"]) == (
        "acme-notes",
        API_HOST,
        cli_env["ISV_VCLOUD_WALLET"],
    )
    [service] = platform.bodies("service")
    assert service["durationToPrice"][0] == {
        "price": 2.0,
        "chargingOptions": {"plan": "starter"},
        "duration": {"1": 1.0, "24": 0.95, "720": 0.85},
    }
    assert service["categoryID"] == platform.bodies("category")[0]["categoryID"]
    assert TOKEN not in first.output + second.output


def test_a_dry_run_prints_the_plan_and_creates_nothing(
    cli_env: dict[str, str], platform: VCloudPlatform
) -> None:
    result = run_cli(cli_env, "vcloud", "register", str(EXAMPLE), "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        "provider 'acme-notes': would create",
        "category 'Team-Notes': would create",
        "service 'Team Notes' in 'Team-Notes': would create",
        "3 to create, 0 as the template says, 0 differ",
    ]
    assert counts(platform) == (0, 0, 0)
    assert all(r["method"] == "GET" for r in platform.requests())


def test_what_is_missing_is_created_and_what_differs_is_reported(
    cli_env: dict[str, str], platform: VCloudPlatform, tmp_path: Path
) -> None:
    run_cli(cli_env, "vcloud", "register", str(EXAMPLE))
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        EXAMPLE.read_text(encoding="utf-8")
        .replace("price: 5", "price: 6")
        .replace("refundable: true", "refundable: false")
        + "\n  - name: Team-Archive\n    services: []\n",
        encoding="utf-8",
    )

    dry = run_cli(cli_env, "vcloud", "register", str(changed), "--dry-run")
    result = run_cli(cli_env, "vcloud", "register", str(changed))

    assert "category 'Team-Archive': would create" in dry.output
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "provider 'acme-notes': registered, as the template says",
        "category 'Team-Notes': registered, as the template says",
        "service 'Team Notes' in 'Team-Notes': registered, but differs in durationToPrice, refundable "
        "(the platform keeps its values: change them there)",
        "category 'Team-Archive': created",
        "1 created, 2 as the template says, 1 differ",
    ]
    assert counts(platform) == (1, 2, 1)
    assert platform.bodies("service")[0]["refundable"] is True  # never changed behind the seller's back


def test_a_provider_registered_with_another_wallet_is_reported(
    cli_env: dict[str, str], platform: VCloudPlatform
) -> None:
    run_cli(cli_env, "vcloud", "register", str(EXAMPLE))
    result = run_cli({**cli_env, "ISV_VCLOUD_WALLET": "ATanotherWallet"}, "vcloud", "register", str(EXAMPLE))
    assert "provider 'acme-notes': registered, but differs in walletAddress" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("provider: [", "is not valid YAML at line 1"),
        ("- a list", "must be a mapping"),
        ("provider: {}", "provider.name: Missing data for required field"),
        (
            "provider: {name: p}\ncategories: [{name: c, services: [{name: s, refundable: yes}]}]",
            "categories[0].services[0].durationToPrice: Missing data for required field",
        ),
        ("provider: {name: p}\ncategories: [{name: c}, {name: c}]", "a category name is listed twice"),
    ],
)
def test_a_bad_template_is_refused_before_anything_is_sent(
    cli_env: dict[str, str], platform: VCloudPlatform, tmp_path: Path, text: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    result = run_cli(cli_env, "vcloud", "register", str(bad))
    assert result.exit_code == 1
    assert message in result.output
    assert platform.requests() == []


def test_without_an_api_host_registration_says_which_setting(
    cli_env: dict[str, str], platform: VCloudPlatform
) -> None:
    env = {**cli_env, "ISV_VCLOUD_API_HOST": ""}
    result = run_cli(env, "vcloud", "register", str(EXAMPLE))
    assert result.exit_code == 1
    assert "no apiHost: set ISV_VCLOUD_API_HOST" in result.output


def test_a_platform_error_ends_registration_naming_the_call(
    cli_env: dict[str, str], platform: VCloudPlatform
) -> None:
    platform.fail_next(2, status=500, path_prefix="/api/v1/service/category")  # its retry too
    result = run_cli(cli_env, "vcloud", "register", str(EXAMPLE))
    assert result.exit_code == 1
    assert "provider 'acme-notes': created" in result.output
    assert "V Cloud GET /api/v1/service/category: HTTP 500" in result.output
    again = run_cli(cli_env, "vcloud", "register", str(EXAMPLE))  # run again: it finishes the job
    assert again.exit_code == 0, again.output
    assert counts(platform) == (1, 1, 1)


def test_register_needs_the_platform_url(cli_env: dict[str, str]) -> None:
    result = run_cli({**cli_env, "ISV_VCLOUD_API_URL": ""}, "vcloud", "register", str(EXAMPLE))
    assert result.exit_code == 1
    assert "ISV_VCLOUD_API_URL is not set" in result.output
