"""Imports every domain service so each registers how to rehash its signable records."""

from server.designs import service as _designs  # noqa: F401
from server.nonconformities import service as _nonconformities  # noqa: F401
from server.qualification import service as _qualification  # noqa: F401
from server.stages import service as _stages  # noqa: F401
