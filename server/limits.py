"""Bounds on what a request may carry (issue 16: a 1 MB user id in a failed login grew the append-only audit trail
by 150 MiB in half a second). Every string of every request body has a maximum length: fields that say what it
is set their own; the rest get TEXT_MAX through the request models' config (`str_max_length`), so a new field is
bounded without anyone remembering to. Path and query strings are bounded by the HTTP server's request-line limit.
"""

from datetime import date
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator

TEXT_MAX = 4000  # characters: the longest free text a person writes in one field (descriptions, rationales)


def _not_a_number(value):
    # Pydantic's lax mode reads 0 as 1970-01-01 and 1700000000 as a time: a person never means a number there.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError("give a day as YYYY-MM-DD and a time as ISO 8601 with its zone, not a number")
    return value


Day = Annotated[date, BeforeValidator(_not_a_number)]  # a day in a request body
Instant = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]  # a point in time in a request body
