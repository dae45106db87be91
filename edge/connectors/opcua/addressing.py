"""Addressing rules: node ids ('nsu=<URI>;...' or 'ns=<index>;...') and browse paths from Objects.

Namespace indexes are a server's private numbering and may change between server runs; namespace
URIs do not. Both forms are resolved against the server's NamespaceArray at every connect."""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import ua


class AddressError(ValueError):
    """A node id or browse path that cannot be resolved on this server."""


def resolve_node_id(text: str, namespaces: list[str]) -> ua.NodeId:
    """Parse a node id string; 'nsu=<URI>;' is mapped to the server's current index for that URI."""
    try:
        parsed = ua.NodeId.from_string(text.strip())
    except Exception as e:  # asyncua raises several types for a malformed string
        raise AddressError(f"node id '{text}' is not valid ({e})") from None
    uri = getattr(parsed, "NamespaceUri", None)
    if uri:
        try:
            index = namespaces.index(uri)
        except ValueError:
            raise AddressError(f"node id '{text}': namespace URI '{uri}' is not offered by the server") from None
        return ua.NodeId(parsed.Identifier, index, parsed.NodeIdType)
    if parsed.NamespaceIndex >= len(namespaces):
        raise AddressError(f"node id '{text}': namespace index {parsed.NamespaceIndex} does not exist on the server")
    return ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)


@dataclass(frozen=True)
class PathElement:
    """One browse-path element: a browse name, with its namespace index or None for 'any namespace'."""

    name: str
    ns: int | None


def parse_browse_path(path: str, namespaces: list[str]) -> list[PathElement]:
    """Split '<URI>:<Name>/<URI>:<Name>/...' into elements, matching URIs against the server's namespaces.

    Namespace URIs may themselves contain '/' and ':' (http://opcfoundation.org/UA/DI/), so each
    element is matched against the known URIs (longest first) rather than split naively. An element
    may also be '<index>:<Name>' (not recommended: indexes change) or a plain '<Name>' (any namespace)."""
    known = sorted(((u, i) for i, u in enumerate(namespaces) if u), key=lambda p: -len(p[0]))
    rest = path.strip().lstrip("/")
    out: list[PathElement] = []
    while rest:
        for uri, index in known:
            if rest.startswith(uri + ":"):
                rest = rest[len(uri) + 1:]
                ns = index
                break
        else:
            ns = None
            head = rest.split("/", 1)[0]
            prefix, colon, _ = head.partition(":")
            if colon and prefix.isdigit():
                ns = int(prefix)
                rest = rest[len(prefix) + 1:]
            elif colon:
                raise AddressError(
                    f"browse path '{path}': namespace '{prefix}' in element '{head}' is not offered by the server"
                )
        name, _, rest = rest.partition("/")
        if not name:
            raise AddressError(f"browse path '{path}' has an empty element")
        out.append(PathElement(name, ns))
    if not out:
        raise AddressError("empty browse path")
    return out


async def resolve_browse_path(client, path: str, namespaces: list[str]) -> ua.NodeId:
    """Walk a browse path from Objects (hierarchical references), one Browse per element."""
    elements = parse_browse_path(path, namespaces)
    node = client.nodes.objects
    walked = "Objects"
    for el in elements:
        children = await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences)
        match = [
            c for c in children
            if c.BrowseName.Name == el.name and (el.ns is None or c.BrowseName.NamespaceIndex == el.ns)
        ]
        if not match:
            raise AddressError(f"browse path '{path}': '{walked}' has no child '{el.name}'")
        if len(match) > 1 and el.ns is None:
            raise AddressError(
                f"browse path '{path}': '{walked}' has several children named '{el.name}'; give the namespace URI"
            )
        node = client.get_node(match[0].NodeId)
        walked += "/" + el.name
    return node.nodeid


async def resolve(client, address: str, namespaces: list[str], *, kind: str | None = None) -> ua.NodeId:
    """Resolve a node id or a browse path (config strings: a node id starts with ns=, nsu=, i=, s=, g= or b=)."""
    if kind == "browse_path" or (kind is None and not _looks_like_node_id(address)):
        return await resolve_browse_path(client, address, namespaces)
    return resolve_node_id(address, namespaces)


def _looks_like_node_id(text: str) -> bool:
    return text.strip().startswith(("ns=", "nsu=", "i=", "s=", "g=", "b="))
