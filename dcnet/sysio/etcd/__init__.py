"""The etcd v3 client of dcnet: a thin wrapper of etcd's HTTP/JSON gateway (/v3/...).

It owns parsing store URLs (``etcd://`` / ``etcds://``) into :class:`Settings` and the
:class:`Client`: keys and values, transactions (create / compare-and-swap), leases,
watches resumable from a revision, auth administration, failover between endpoints and
token re-authentication. Everything else in dcnet talks to etcd only through it, and
imports it from here (``from dcnet.sysio.etcd import Client, ...``).

The modules, by what they own:

- :mod:`~dcnet.sysio.etcd.url`: store URLs -> :class:`Settings`;
- :mod:`~dcnet.sysio.etcd.errors`: :class:`EtcdError` and its kinds;
- :mod:`~dcnet.sysio.etcd.codec`: :class:`KeyValue`, :class:`Event`, base64 and the key
  prefix;
- :mod:`~dcnet.sysio.etcd.transport`: HTTP, TLS, namespace sockets, endpoint failover,
  token auth;
- :mod:`~dcnet.sysio.etcd.watch`: resumable watches;
- :mod:`~dcnet.sysio.etcd.client`: :class:`Client` (kv, txn, leases, maintenance, auth
  administration).

Why our own wrapper and not ``etcd3gw``: etcd3gw (requests-based) talks to one endpoint
(no failover), reports a compacted watch start only as a silently ended stream, cannot
stop a watch on demand, and its sockets cannot be opened inside a chosen network
namespace (the test labs need that). The gateway protocol is small (POST JSON, base64
keys, newline-delimited streaming), so http.client + ssl do it with no dependency and a
cheap import: http.client, ssl and socket are imported only when a client connects.
docs/etcd.md compares it with the gRPC client ``aetcd``, measured.

Keys given to a Client are relative to ``Settings.prefix`` (plain concatenation:
"/dcnet" + "/nodes/a"); keys it returns have the prefix stripped again.
"""

from __future__ import annotations

from dcnet.sysio.etcd.client import Client
from dcnet.sysio.etcd.codec import Event, KeyValue, prefix_range_end
from dcnet.sysio.etcd.errors import (
    EtcdCompacted,
    EtcdError,
    EtcdPermissionDenied,
    EtcdUnavailable,
)
from dcnet.sysio.etcd.url import DEFAULT_PORT, Settings, parse_url

__all__ = ["DEFAULT_PORT", "Client", "EtcdCompacted", "EtcdError", "EtcdPermissionDenied",
           "EtcdUnavailable", "Event", "KeyValue", "Settings", "parse_url",
           "prefix_range_end"]
