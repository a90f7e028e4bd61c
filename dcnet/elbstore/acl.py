"""etcd roles for the ELB (the grants are pure; :func:`apply_grants` sends them).

- ``elb-admin``: read and write everything under ``elb/`` (push, rollback, clean-up);
- ``elb-director-<NAME>``: read ``elb/desired/`` (model revisions, backends), write
  only ``elb/status/<NAME>/``; it cannot push, roll back or register;
- ``elb-service-<JOBNAME>``: read the current pointer and the model revisions (to check
  a registration against the service's ports) and the directors' status (``backend
  drain|remove`` waits for their drain reports), write only
  ``elb/desired/backends/<JOBNAME>/``: one service's credentials cannot touch another's.

Prefixes end with ``/`` so a JOBNAME or director name that is a prefix of another one
grants nothing of the other. Users (``elbctl acl user``) get passwords and roles; etcd
authentication is switched on by ``elbctl acl enable`` (needs the root user).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dcnet.elbstore.keys import Keys, check_director, check_job

ADMIN_ROLE = "elb-admin"
READ, WRITE, READWRITE = "read", "write", "readwrite"


@dataclass(frozen=True)
class Grant:
    role: str
    prefix: str
    perm: str

    def describe(self) -> str:
        return f"{self.role}: {self.perm} {self.prefix}*"


def director_role(name: str) -> str:
    return f"elb-director-{check_director(name)}"


def service_role(job: str) -> str:
    return f"elb-service-{check_job(job)}"


def admin_grants(keys: Keys) -> list[Grant]:
    return [Grant(ADMIN_ROLE, keys.root, READWRITE)]


def director_grants(keys: Keys, name: str) -> list[Grant]:
    role = director_role(name)
    return [Grant(role, keys.desired, READ),
            Grant(role, keys.director_status_prefix(name), READWRITE)]


def service_grants(keys: Keys, job: str) -> list[Grant]:
    role = service_role(job)
    return [Grant(role, keys.current, READ), Grant(role, keys.models, READ),
            Grant(role, keys.service_backends(job), READWRITE),
            Grant(role, keys.statuses, READ)]


def all_grants(keys: Keys, directors: Iterable[str] = (),
               services: Iterable[str] = ()) -> list[Grant]:
    out = admin_grants(keys)
    for name in directors:
        out += director_grants(keys, name)
    for job in services:
        out += service_grants(keys, job)
    return out


def _exists(exc: Exception) -> bool:
    return "already exist" in str(exc).lower()


def apply_grants(client, grants: list[Grant]) -> list[str]:
    """Create the roles (existing ones are kept) and grant the prefixes (idempotent)."""
    from dcnet.sysio.etcd import EtcdPermissionDenied

    lines = []
    for role in dict.fromkeys(g.role for g in grants):
        try:
            client.role_add(role)
            lines.append(f"role {role}: created")
        except EtcdPermissionDenied:
            raise
        except Exception as exc:      # EtcdError "role name already exists"
            if not _exists(exc):
                raise
            lines.append(f"role {role}: exists")
    for grant in grants:
        client.role_grant_prefix(grant.role, grant.prefix, grant.perm)
        lines.append(f"grant {grant.describe()}")
    return lines


def add_user(client, user: str, password: str, roles: Iterable[str]) -> list[str]:
    """Create ``user`` (kept when it exists) and grant it ``roles``."""
    from dcnet.sysio.etcd import EtcdPermissionDenied

    lines = []
    try:
        client.user_add(user, password)
        lines.append(f"user {user}: created")
    except EtcdPermissionDenied:
        raise
    except Exception as exc:
        if not _exists(exc):
            raise
        lines.append(f"user {user}: exists (password unchanged)")
    for role in roles:
        client.user_grant_role(user, role)
        lines.append(f"user {user}: role {role}")
    return lines


def enable_auth(client, root_password: str) -> list[str]:
    """Create the root user with etcd's root role and switch authentication on."""
    lines: list[str] = []
    try:
        client.role_add("root")
    except Exception as exc:
        if not _exists(exc):
            raise
    lines += add_user(client, "root", root_password, ["root"])
    client.auth_enable()
    return [*lines, "authentication enabled"]
