"""Addressing rules: namespace URIs (which may contain '/' and ':') are matched against the server's array."""

from __future__ import annotations

import pytest
from asyncua import ua

from edge.connectors.opcua.addressing import AddressError, PathElement, parse_browse_path, resolve_node_id

NS = ["http://opcfoundation.org/UA/", "urn:srv", "http://opcfoundation.org/UA/Machinery/",
      "http://opcfoundation.org/UA/DI/", "urn:amtrace:sim:lpbf-01"]


def test_browse_path_with_uris_containing_slashes_and_colons():
    """Each element's URI is found in the namespace array, so '/' inside a URI does not split the path."""
    path = "http://opcfoundation.org/UA/Machinery/:Machines/urn:amtrace:sim:lpbf-01:LPBF-Printer/http://opcfoundation.org/UA/DI/:Identification"
    assert parse_browse_path(path, NS) == [PathElement("Machines", 2), PathElement("LPBF-Printer", 4),
                                           PathElement("Identification", 3)]


def test_plain_names_and_indexes():
    """A plain name matches any namespace; '<index>:<Name>' is accepted (though indexes change)."""
    assert parse_browse_path("Machines/4:Job", NS) == [PathElement("Machines", None), PathElement("Job", 4)]


def test_unknown_namespace_uri_is_named():
    """A URI the server does not offer is refused with the element."""
    with pytest.raises(AddressError, match="namespace 'urn' in element 'urn:other:x:Job' is not offered"):
        parse_browse_path("urn:other:x:Job", NS)


def test_node_id_with_namespace_uri_maps_to_the_current_index():
    """nsu= is replaced by the index the server uses today."""
    assert resolve_node_id("nsu=urn:amtrace:sim:lpbf-01;s=lpbf-01.Job.JobId", NS) == ua.NodeId("lpbf-01.Job.JobId", 4)
    assert resolve_node_id("nsu=urn:amtrace:sim:lpbf-01;s=x", NS[:2] + ["pad"] + NS[2:]) == ua.NodeId("x", 5)
    with pytest.raises(AddressError, match="namespace URI 'urn:gone' is not offered by the server"):
        resolve_node_id("nsu=urn:gone;i=5", NS)
    with pytest.raises(AddressError, match="namespace index 9 does not exist"):
        resolve_node_id("ns=9;i=5", NS)
