"""The service's contract tests (routes, schemas, errors, limits, auth), collected here again and run against
the Ray Serve deployment: this folder's conftest gives them `shared_service` and `in_process_service` as
`tlcr serve-ray` deployments instead of `tlcr serve` processes."""

from __future__ import annotations

from tests.service.ray.conftest import require_ray

require_ray()

from tests.service.test_bad_input import *  # noqa: E402, F403
from tests.service.test_limits import (  # noqa: E402, F401
    test_api_key_guards_inference_but_not_health,
    test_opt_in_truncation_drops_the_prompt_start,
)
from tests.service.test_service_http import *  # noqa: E402, F403
