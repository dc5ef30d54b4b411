"""Result codes the Kit sync interfaces answer with (spec §6); duplicated so no other adapter is imported."""

SUCCESS = "000000"
AUTH_FAILED = "000001"
INVALID_PARAMETERS = "000002"
INTERNAL_ERROR = "000005"
CLIENT_SECRET_UNREADABLE = "000101"  # noqa: S105 - a result code; applicationSync: clientSecret could not be decrypted
