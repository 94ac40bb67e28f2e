"""The Postfix search order for access(5)-style lookups, as pure functions.

Input: a table (a :class:`~mta.tables.base.LookupTable`, or any callable
``key -> value | None``) and what to look up: a domain, a mail address, or a
client's host name and address.
Output: the value of the first key that the table knows, or None.

The order is that of Postfix smtpd_check.c and access(5):

* domain: ``sub.example.com``, then its parents ``example.com``, ``com``
  when ``parent_domain_matches_subdomains`` covers the lookup, else the
  ``.example.com``, ``.com`` forms.  An address (HELO ``192.0.2.1``, or
  ``[192.0.2.1]``) is looked up whole only.
* address ``user+ext@domain``: ``user+ext@domain``, ``user@domain`` (when a
  recipient delimiter is set), the domain as above, ``user+ext@``, ``user@``.
  The null sender is looked up as ``smtpd_null_access_lookup_key`` (``<>``).
* client: the host name as a domain, then the IP address and its prefixes
  (``192.0.2.1``, ``192.0.2``, ``192.0``, ``192``; an IPv6 address loses one
  ``:``-separated part at a time).  An IPv4-mapped IPv6 address is looked up
  in its IPv4 form, as Postfix smtpd records such clients.

A pattern table (``cidr:``, ``regexp:``, ``pcre:``) is asked only the first,
full key of each search (Postfix asks it no partial keys); the ``*_keys``
functions list the keys in order for either kind.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import cast

from mta.tables.base import LookupTable, accepts_partial_keys

Lookup = Callable[[str], str | None]

# Local parts that are never split at the recipient delimiter (Postfix
# split_addr.c): the role addresses must reach their owner unchanged.
_UNSPLIT = frozenset({"postmaster", "mailer-daemon", "double-bounce"})


def strip_extension(
    localpart: str, delimiter: str, *, owner_request_special: bool = True
) -> str | None:
    """``user`` of ``user+ext`` (any character of ``delimiter`` splits, the
    first one found wins), or None when the local part has no extension.

    As Postfix: postmaster, mailer-daemon and double-bounce are not split,
    nor owner-foo and foo-request when ``-`` is a delimiter (the
    ``owner_request_special`` parameter), nor a split that leaves no user.
    """
    if not delimiter or not localpart:
        return None
    folded = localpart.lower()
    if folded in _UNSPLIT:
        return None
    # Backwards compatibility: owner-foo and foo-request are list addresses.
    list_role = folded.startswith("owner-") or (len(folded) > 8 and folded.endswith("-request"))
    if owner_request_special and "-" in delimiter and list_role:
        return None
    for i, ch in enumerate(localpart):
        if ch in delimiter:
            return localpart[:i] if i > 0 else None
    return None


def _is_address(name: str) -> bool:
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _domain_keys(domain: str, parent_matches_subdomains: bool) -> Iterator[str]:
    domain = domain.rstrip(".")
    if not domain:
        return
    yield domain
    # Postfix does no subdomain magic on numerical host names.
    if _is_address(domain):
        return
    start = 0
    while True:
        dot = domain.find(".", start + 1)
        if dot < 0:
            return
        start = dot + 1 if parent_matches_subdomains else dot
        if start >= len(domain):
            return
        yield domain[start:]


def _address_keys(
    address: str, delimiter: str, parent: bool, null_key: str, owner_request_special: bool
) -> Iterator[str]:
    if address in ("", "<>"):
        yield null_key
        return
    yield address
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    bare = strip_extension(local, delimiter, owner_request_special=owner_request_special)
    if bare is not None:
        yield f"{bare}@{domain}" if at else bare
    if not at:
        return
    yield from _domain_keys(domain, parent)
    yield f"{local}@"
    if bare is not None:
        yield f"{bare}@"


def _ip_keys(ip: str) -> Iterator[str]:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        key = ip
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        key = str(address)
    if not key:
        return
    yield key
    delimiter = ":" if ":" in key else "."
    while (cut := key.rfind(delimiter)) >= 0:
        key = key[:cut]
        if key:
            yield key


def _only_first(keys: Iterator[str], partial: bool) -> Iterator[str]:
    for key in keys:
        yield key
        if not partial:
            return


def domain_keys(domain: str, parent_matches_subdomains: bool, *, partial: bool = True) -> list[str]:
    """The keys :func:`lookup_domain` tries, in order."""
    return list(_only_first(_domain_keys(domain, parent_matches_subdomains), partial))


def address_keys(
    address: str,
    delimiter: str = "",
    *,
    parent_matches_subdomains: bool = True,
    null_key: str = "<>",
    owner_request_special: bool = True,
    partial: bool = True,
) -> list[str]:
    """The keys :func:`lookup_address` tries, in order."""
    keys = _address_keys(
        address, delimiter, parent_matches_subdomains, null_key, owner_request_special
    )
    return list(_only_first(keys, partial))


def client_keys(
    hostname: str | None,
    ip: str,
    *,
    parent_matches_subdomains: bool = True,
    partial: bool = True,
) -> list[str]:
    """The keys :func:`lookup_client` tries, in order.  The first key of
    the name and the first of the address are full keys."""
    keys = list(_only_first(_domain_keys(hostname or "", parent_matches_subdomains), partial))
    keys.extend(_only_first(_ip_keys(ip), partial))
    return keys


def _resolve(table: LookupTable | Lookup) -> tuple[Lookup, bool]:
    """The lookup callable and whether it takes partial keys.  A duck-typed
    check: isinstance() on a runtime Protocol costs more than the lookups."""
    if isinstance(getattr(table, "spec", None), str):
        known = cast(LookupTable, table)
        return known.lookup, accepts_partial_keys(known)
    return cast(Lookup, table), True


def _first_hit(lookup: Lookup, keys: list[str]) -> str | None:
    for key in keys:
        value = lookup(key)
        if value is not None:
            return value
    return None


def lookup_domain(
    table: LookupTable | Lookup, domain: str, parent_matches_subdomains: bool
) -> str | None:
    """Look a domain up, then its parents (``example.com``) or their
    ``.example.com`` forms; the first hit wins."""
    lookup, partial = _resolve(table)
    return _first_hit(lookup, domain_keys(domain, parent_matches_subdomains, partial=partial))


def lookup_address(
    table: LookupTable | Lookup,
    address: str,
    delimiter: str = "",
    *,
    parent_matches_subdomains: bool = True,
    null_key: str = "<>",
    owner_request_special: bool = True,
) -> str | None:
    """Look a mail address up in access(5) order; ``""`` and ``"<>"`` are
    the null sender.  ``delimiter`` is ``recipient_delimiter``."""
    lookup, partial = _resolve(table)
    keys = address_keys(
        address,
        delimiter,
        parent_matches_subdomains=parent_matches_subdomains,
        null_key=null_key,
        owner_request_special=owner_request_special,
        partial=partial,
    )
    return _first_hit(lookup, keys)


def lookup_client(
    table: LookupTable | Lookup,
    hostname: str | None,
    ip: str,
    *,
    parent_matches_subdomains: bool = True,
) -> str | None:
    """Look a client up: its host name and parents, then its address and
    the address's prefixes (check_client_access)."""
    lookup, partial = _resolve(table)
    keys = client_keys(
        hostname, ip, parent_matches_subdomains=parent_matches_subdomains, partial=partial
    )
    return _first_hit(lookup, keys)
