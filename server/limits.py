"""Bounds on what a request may carry (issue 16: a 1 MB user id in a failed login grew the append-only audit trail
by 150 MiB in half a second). Every string of every request body has a maximum length: fields that say what it
is set their own; the rest get TEXT_MAX through the request models' config (`str_max_length`), so a new field is
bounded without anyone remembering to. Path and query strings are bounded by the HTTP server's request-line limit.
"""

TEXT_MAX = 4000  # characters: the longest free text a person writes in one field (descriptions, rationales)
