"""Imports every domain service so each registers how to rehash its signable records.

The one list of signed record types, used by the API (app start-up) and by `amtrace-server audit verify`
(a fresh process that imports nothing else): a service missing here makes every signature of its records
"on an unknown record type" for the CLI. tests/server/audit/test_audit_cli.py checks it in a fresh process."""

from server.cycles import service as _cycles  # noqa: F401 - cycle_recipe, process_cycle, manual_step
from server.designs import service as _designs  # noqa: F401
from server.materials import service as _materials  # noqa: F401 - material_lot (release after incoming inspection)
from server.nonconformities import service as _nonconformities  # noqa: F401
from server.qualification import service as _qualification  # noqa: F401
from server.samples import service as _samples  # noqa: F401 - sample_custody (withdrawal, disposal)
from server.stages import service as _stages  # noqa: F401
# Not a rehasher: subscribes to accepted releases, so a release seals its device history record (and is refused
# if nothing subscribed).
from server.history import seal as _history_seal  # noqa: F401,E402
# Gives each released device its retention date (server/retention): the same announcement.
from server.retention import service as _retention  # noqa: F401,E402
# Writes each released device's archive once the release has committed (server/archive): the same announcement.
from server.archive import service as _archive  # noqa: F401,E402
# The signed purge's record type (records_purge), checked by audit verify against its tombstone.
from server.retention import purge as _purge  # noqa: F401,E402
