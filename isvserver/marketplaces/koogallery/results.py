"""Result codes of the KooGallery produce interface (spec §6), V1 and V2 alike."""

from isvserver.calls import Outcome

SUCCESS = "000000"
AUTH_FAILED = "000001"
INVALID_PARAMETERS = "000002"
INSTANCE_NOT_FOUND = "000003"
IN_PROGRESS = "000004"
INTERNAL_ERROR = "000005"
NO_RESOURCE = "000100"

# The pipeline's outcomes in the interface's codes.
OUTCOME_CODES = {
    Outcome.SUCCESS: SUCCESS,
    Outcome.IN_PROGRESS: IN_PROGRESS,
    Outcome.AUTH_FAILED: AUTH_FAILED,
    Outcome.INVALID: INVALID_PARAMETERS,
    Outcome.NOT_FOUND: INSTANCE_NOT_FOUND,
    Outcome.INTERNAL: INTERNAL_ERROR,
    Outcome.CONFLICT: INVALID_PARAMETERS,
    Outcome.GONE: INSTANCE_NOT_FOUND,
}
