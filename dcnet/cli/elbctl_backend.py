"""``elbctl backend add|remove|drain SERVICE ADDR[:PORT] [--weight W] [--target T]``.

One real server of one service, changed now (container init hooks), on any target that
keeps a backend registry:

- ``--target lvs`` (the default): LVS's fast path, :func:`dcnet.lvs.dynamic.change_backend`
  (its registry and drain set in the LVS state directory); ``drain|remove`` wait
  (unlocked) until the server has no active connection or ``lvs.drain_deadline``
  passed (:func:`dcnet.lvs.dynamic.drain_backend`: exit 0 safe, 4 deadline passed, 5
  added back meanwhile); ``remove --now`` deletes at once;
- other targets (``haproxy``): under the target's lock the change is recorded in the
  target's registry (:mod:`dcnet.backendfile`), then "last applied model + registry" is
  planned and applied like ``elbctl apply`` (for HAProxy a runtime API change, no
  reload). ``drain`` and ``remove`` first drain the server (no new requests), release
  the lock, wait until the server has no session or the model's ``drain_deadline``
  passed (then its sessions are shut down), and say which; ``remove`` then takes the
  server out under the lock. When the command returns, it is safe to stop the server.
- ``--store URL`` (or ``$DCNET_ELB_STORE``): recorded in etcd for the agents instead;
  ``drain|remove`` wait until every director's agent reports the server drained or the
  deadline passed (:mod:`dcnet.elbstore.drainwait`, exit 0 / 4 / 5 as for LVS).

Exit codes as elbctl's: 1 invalid request or failed apply, 3 target unavailable.
"""

from __future__ import annotations

import os
import sys

import click

from dcnet.cli.common import (
    EXIT_INVALID,
    EXIT_UNAVAILABLE,
    fail,
    report_target_error,
    target_errors,
    target_kwargs,
    with_target_options,
)

ACTIONS = ("add", "remove", "drain")


@click.command("backend")
@click.argument("action", type=click.Choice(ACTIONS))
@click.argument("service")
@click.argument("server")
@click.option("--weight", type=int, default=None, help="Weight (add/drain keep the current "
              "one when not given).")
@click.option("--target", default="lvs", show_default=True,
              help="The target to change (lvs, haproxy).")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for a running apply.")
@click.option("--now", is_flag=True, help="lvs: remove without draining nor waiting "
              "(a crashed server): its dests are deleted at once.")
@click.option("--store", "store_url", envvar="DCNET_ELB_STORE", default=None, metavar="URL",
              help="Record the change in etcd (etcd://...) for the directors' agents "
                   "instead of programming this machine (default $DCNET_ELB_STORE).")
@with_target_options
def backend_cmd(action: str, service: str, server: str, weight: int | None, target: str,
                lock_timeout: float, store_url: str | None, now: bool = False,
                **params) -> None:
    """Add, remove (drain, then take out) or drain one real server of SERVICE now."""
    if now and (store_url or target != "lvs"):
        fail("backend: --now is for --target lvs on this machine only")
    if store_url:
        from dcnet.cli.elbctl_store import run_backend_store

        run_backend_store(store_url, action, service, server, weight)
        return
    options = target_kwargs(target, params)
    if target == "lvs":
        _lvs(action, service, server, weight, options, lock_timeout, now)
    else:
        _generic(target, action, service, server, weight, options, lock_timeout)


def _lvs(action: str, service: str, server: str, weight: int | None, options: dict,
         lock_timeout: float, now: bool = False) -> None:
    """add: one locked change; drain/remove: drain, wait (unlocked) until safe or
    ``lvs.drain_deadline``, remove deletes (exit 0 safe, 4 deadline passed, 5 added back
    meanwhile, 1 failed; see :func:`dcnet.lvs.dynamic.drain_backend`)."""
    from dcnet.lvs.dynamic import BackendCommandError, change_backend, drain_backend
    from dcnet.lvs.genl import NetlinkError
    from dcnet.lvs.ipvs import KernelIPVS
    from dcnet.lvs.store import Store
    from dcnet.sysio.flock import LockTimeout

    if now and action != "remove":
        fail(f"backend {action}: --now is for remove only")
    netns = options.get("netns") or os.environ.get("DCNET_LVS_NETNS") or None
    try:
        ipvs = KernelIPVS(netns)
    except (NetlinkError, OSError) as exc:
        fail(f"lvs: {exc}", EXIT_UNAVAILABLE)
    store = Store(options.get("state_dir"))
    try:
        if action == "add":
            result = change_backend(store, ipvs, action, service, server, weight,
                                    lock_timeout=lock_timeout)
            code = EXIT_INVALID if result.errors else 0
        else:
            result = drain_backend(store, ipvs, action, service, server, weight, now=now,
                                   lock_timeout=lock_timeout)
            code = result.exit_code
    except BackendCommandError as exc:
        fail(f"backend {action}: {exc}")
    except LockTimeout as exc:
        fail(f"backend {action}: {exc}", EXIT_UNAVAILABLE)
    except (NetlinkError, OSError) as exc:
        fail(f"backend {action}: lvs: {exc}", EXIT_UNAVAILABLE)
    finally:
        ipvs.close()
    click.echo(result.to_text())
    sys.exit(code)


def _generic(target: str, action: str, service: str, server: str, weight: int | None,
             options: dict, lock_timeout: float) -> None:
    from dcnet.backendfile import BackendCommandError, BackendFile, UnsafeFile
    from dcnet.target import registry

    refused, unavailable = target_errors(target)
    try:
        instance = registry.create(target, **options)
    except (*refused, *unavailable) as exc:
        report_target_error(target, exc)
    try:
        files = getattr(instance, "backends", None)
        if not isinstance(files, BackendFile):
            fail(f"backend {action}: --target {target} keeps no backend registry (targets "
                 "that do: lvs, haproxy)")
        try:
            first = "drain" if action == "remove" else action
            model, name, ident, entry = _change(instance, files, first, service, server,
                                                weight, lock_timeout, action == "remove")
            if action == "add" or entry is None:
                return                  # added, or removing a server nobody runs
            waiter = getattr(instance, "wait_drained", None)
            if waiter is None:
                click.echo(f"  note: {target} cannot count a server's sessions: not waited")
            else:
                click.echo(f"  {waiter(files.effective(model), name, ident).describe()}")
            if action == "remove":
                _change(instance, files, "remove", name, ident, None, lock_timeout)
        except BackendCommandError as exc:
            fail(f"backend {action}: {exc}")
        except UnsafeFile as exc:
            fail(f"backend {action}: {exc}", EXIT_UNAVAILABLE)
        except (*refused, *unavailable) as exc:
            report_target_error(target, exc)
    finally:
        instance.close()


def _change(instance, files, action: str, service: str, server: str, weight: int | None,
            lock_timeout: float, only_known: bool = False):
    """Record ``action`` and apply last model + registry, under the target's lock
    (``only_known``: nothing for a server neither the model nor the registry has)."""
    from dcnet.backendfile import BackendCommandError, record
    from dcnet.target.apply import apply_plan, make_plan

    with instance.lock(lock_timeout):
        model = files.last_model()
        if model is None:
            raise BackendCommandError(
                f"no applied model recorded in {files.model_path}: run 'elbctl apply "
                f"--target {instance.name} -f MODEL' first")
        name, ident, entry = record(files, model, action, service, server, weight,
                                    only_known=only_known)
        if entry is None and only_known:
            click.echo(f"remove {ident} in {name}: not in the model nor the registry; "
                       "nothing to do")
            return model, name, ident, None
        state = f"{entry['state']}, weight {entry['weight']}" if entry else "gone"
        click.echo(f"{action} {ident} in {name}: recorded ({state})")
        result = apply_plan(instance, make_plan(instance, model))
    for line in result.to_text().splitlines():
        click.echo(f"  {line}")
    if not result.ok:
        sys.exit(EXIT_INVALID)
    return model, name, ident, entry


def register(cli: click.Group, render: click.Group) -> None:
    cli.add_command(backend_cmd)
