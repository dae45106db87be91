"""Cycle-log folder connector: machines that export one CSV (or key/value printout) per cycle to a share."""

from edge.connectors.folder.config import FolderConfig, FolderSource
from edge.connectors.plugin import ProtocolPlugin

PLUGIN = ProtocolPlugin(
    type="folder", config=FolderConfig, source=FolderSource,
    connector="edge.connectors.folder.connector:FolderConnector",
    summary="cycle logs dropped in a folder (CSV or key/value): column map, units, decimal comma, exactly once",
    simulator="edge.connectors.folder.simulator",
)
