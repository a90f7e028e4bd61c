"""``elbctl`` commands for the ELB state in etcd.

- ``push -f MODEL --store URL [-m TEXT]``: validate with the loader, store as a new
  revision and make it current (one transaction);
- ``history --store URL``, ``rollback REV --store URL``: list revisions; make an earlier
  one current as a new revision;
- ``status --store URL``: the current revision and every director's last apply;
- ``agent --store URL --director NAME --target lvs|haproxy|dns [target options]``;
- ``acl setup|user|enable --store URL``: etcd roles, users and authentication.

``elbctl backend add|remove|drain ... --store URL`` lives in :mod:`dcnet.cli.elbctl_backend` and
calls :func:`run_backend_store`. The store URL may come from ``$DCNET_ELB_STORE``.
Exit codes: 1 invalid input or failed, 2 usage (bad URL), 3 etcd unavailable,
4 permission denied by etcd.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import sys
import threading

import click

from dcnet.cli.common import exit_invalid_model, target_kwargs, with_target_options

EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_DENIED = 1, 2, 3, 4
STORE_ENV = "DCNET_ELB_STORE"

store_option = click.option(
    "--store", "store_url", envvar=STORE_ENV, required=True, metavar="URL",
    help="etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?ca=&cert=&key=&user=&password-file=] "
         f"(default ${STORE_ENV}).")
output_option = click.option("-o", "--output", type=click.Choice(["text", "json"]),
                             default="text", show_default=True)


@contextlib.contextmanager
def etcd_errors(command: str):
    """Turn store errors into one clear line on stderr and elbctl's exit codes."""
    from dcnet.elbstore.keys import KeyNameError
    from dcnet.elbstore.records import RecordError
    from dcnet.elbstore.store import StoreConflict
    from dcnet.lvs.dynamic import BackendCommandError
    from dcnet.sysio.etcd import EtcdError, EtcdPermissionDenied, EtcdUnavailable

    def fail(code: int, text: str):
        click.echo(f"elbctl: {command}: {text}", err=True)
        sys.exit(code)

    try:
        yield
    except EtcdPermissionDenied as exc:
        fail(EXIT_DENIED, f"permission denied by etcd: {exc}")
    except EtcdUnavailable as exc:
        fail(EXIT_UNAVAILABLE, f"etcd unavailable: {exc}")
    except (EtcdError, StoreConflict) as exc:
        fail(EXIT_INVALID, str(exc))
    except (BackendCommandError, KeyNameError, RecordError, LookupError) as exc:
        fail(EXIT_INVALID, str(exc))


def open_store(store_url: str, command: str):
    """(settings, ElbStore) for a store URL; a bad URL is a usage error."""
    from dcnet.elbstore.keys import Keys
    from dcnet.elbstore.store import CountingClient, ElbStore, who
    from dcnet.sysio.etcd import Client, parse_url

    try:
        settings = parse_url(store_url)
    except ValueError as exc:
        click.echo(f"elbctl: {command}: bad store URL: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    client = CountingClient(Client(settings))
    return settings, ElbStore(client, Keys(), who(settings.user))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@click.command("push")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False),
              help="The service model (YAML).")
@store_option
@click.option("-m", "--comment", default="", help="A note kept with the revision.")
@output_option
def push_cmd(model_path: str, store_url: str, comment: str, output: str) -> None:
    """Validate MODEL and store it as the new current revision."""
    import os

    from dcnet.elbstore.bundle import collect
    from dcnet.model import ModelError

    try:
        collected = collect(model_path)        # every check before anything is written
    except ModelError as exc:

        exit_invalid_model(model_path, exc)
    _, store = open_store(store_url, "push")
    with etcd_errors("push"):
        record = store.push(collected, comment, source=os.path.abspath(model_path))
    if output == "json":
        click.echo(json.dumps({**record.summary(), "etcd_ops": store.client.total()}))
    else:
        click.echo(f"pushed {model_path} as revision {record.revision} ({len(record.layouts)} "
                   f"services, {len(record.files)} file(s), digest {record.digest})")


@click.command("history")
@store_option
@output_option
def history_cmd(store_url: str, output: str) -> None:
    """List the stored model revisions; * marks the current one."""
    _, store = open_store(store_url, "history")
    with etcd_errors("history"):
        records, current = store.history()
    if output == "json":
        click.echo(json.dumps({"current": current, "revisions": [r.summary() for r in records]},
                              indent=2))
        return
    if not records:
        click.echo("no model revisions")
        return
    for r in records:
        mark = "*" if r.revision == current else " "
        extra = f" rollback of {r.rollback_of}" if r.rollback_of else ""
        note = f" '{r.comment}'" if r.comment else ""
        click.echo(f"{mark} {r.revision:>4}  {_when(r.pushed_at)}  {r.pushed_by}  "
                   f"{len(r.layouts)} services  {r.digest}{extra}{note}")


@click.command("rollback")
@click.argument("revision", type=int)
@store_option
@click.option("-m", "--comment", default="", help="A note kept with the new revision.")
def rollback_cmd(revision: int, store_url: str, comment: str) -> None:
    """Make model REVISION current again (stored as a new revision)."""
    _, store = open_store(store_url, "rollback")
    with etcd_errors("rollback"):
        record = store.rollback(revision, comment)
    click.echo(f"revision {record.revision} is revision {revision}'s model "
               f"(digest {record.digest})")


@click.command("status")
@store_option
@output_option
def status_cmd(store_url: str, output: str) -> None:
    """The current model revision and what every director last applied."""
    _, store = open_store(store_url, "status")
    with etcd_errors("status"):
        current, _ = store.current()
        statuses = store.statuses()
    if output == "json":
        click.echo(json.dumps({"current": current, "directors": [vars(s) for s in statuses]},
                              indent=2))
        return
    click.echo(f"current model revision: {current if current is not None else 'none'}")
    for s in statuses:
        lag = "" if s.model_revision == current else " (behind)"
        click.echo(f"  {s.director:<16} {s.target:<8} {s.result:<8} model {s.model_revision}"
                   f"{lag} at etcd revision {s.revision}, {_when(s.time)}: {s.summary}")
        for error in s.errors:
            click.echo(f"      {error}")


@click.command("agent")
@store_option
@click.option("--director", required=True, help="This director's name (its status key).")
@click.option("--target", required=True, help="The target this director applies to "
              "(lvs, haproxy, dns, ...).")
@click.option("--cache-dir", default=None, help="Where the current model's files are "
              "written, kept 0700 (default /var/lib/dcnet/elb-agent/DIRECTOR).")
@click.option("--debounce", type=float, default=0.05, show_default=True,
              help="Seconds without a new change before applying.")
@click.option("--debounce-max", type=float, default=0.5, show_default=True,
              help="At most this long after the first change.")
@click.option("--resync", type=float, default=60.0, show_default=True,
              help="Check the desired state again this often (drift: repaired or "
                   "reported as the model's agent.drift says).")
@click.option("--metrics-address", default=None, envvar="DCNET_METRICS_ADDRESS",
              help="Serve Prometheus /metrics on HOST:PORT (default: none).")
@click.option("--audit-log", default=None, envvar="DCNET_AUDIT_LOG",
              help="JSON-lines file drift audit events are appended to (default "
                   "/var/log/dcnet/audit.jsonl).")
@with_target_options
def agent_cmd(store_url: str, director: str, target: str, cache_dir: str | None,
              debounce: float, debounce_max: float, resync: float,
              metrics_address: str | None, audit_log: str | None, **params) -> None:
    """Make this director follow the current model and the registered backends."""
    from dcnet.elbstore.agent import Agent
    from dcnet.elbstore.keys import KeyNameError
    from dcnet.sysio.etcd import parse_url

    try:
        settings = parse_url(store_url)
    except ValueError as exc:
        click.echo(f"elbctl: agent: bad store URL: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    options = target_kwargs(target, params)
    try:
        agent = Agent(settings, director, target, options, cache_dir=cache_dir,
                      debounce=debounce, debounce_max=debounce_max, resync=resync,
                      audit_log=audit_log)
    except (KeyNameError, ValueError) as exc:
        click.echo(f"elbctl: agent: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from dcnet.cli.elbctl_metrics import serve_agent_metrics

    metrics = serve_agent_metrics(metrics_address, agent, target, options)
    try:
        agent.run(stop)
    finally:
        if metrics is not None:
            metrics.close()


# ---------------------------------------------------------------------- acl


@click.group("acl")
def acl_group() -> None:
    """etcd roles and users for the ELB (run with root credentials)."""


@acl_group.command("setup")
@store_option
@click.option("--director", "directors", multiple=True, help="A director (repeatable).")
@click.option("--service", "services", multiple=True, help="A service JOBNAME (repeatable).")
@click.option("--all-services", is_flag=True, help="A role for every service of the current "
              "model revision.")
def acl_setup(store_url: str, directors: tuple[str, ...], services: tuple[str, ...],
              all_services: bool) -> None:
    """Create elb-admin, elb-director-NAME and elb-service-JOBNAME roles."""
    from dcnet.elbstore import acl

    _, store = open_store(store_url, "acl setup")
    with etcd_errors("acl setup"):
        jobs = list(services)
        if all_services:
            jobs += [name for name in store.layouts() if name not in jobs]
        for line in acl.apply_grants(store.client, acl.all_grants(store.keys, directors, jobs)):
            click.echo(line)


def _password(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


@acl_group.command("user")
@click.argument("name")
@store_option
@click.option("--password-file", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--role", "roles", multiple=True, help="Grant this role (repeatable).")
@click.option("--director", "directors", multiple=True, help="Grant elb-director-NAME.")
@click.option("--service", "services", multiple=True, help="Grant elb-service-JOBNAME.")
@click.option("--admin", is_flag=True, help="Grant elb-admin.")
def acl_user(name: str, store_url: str, password_file: str, roles: tuple[str, ...],
             directors: tuple[str, ...], services: tuple[str, ...], admin: bool) -> None:
    """Create user NAME (password from a file) and grant it roles."""
    from dcnet.elbstore import acl
    from dcnet.elbstore.keys import KeyNameError

    try:
        wanted = [*roles, *map(acl.director_role, directors), *map(acl.service_role, services)]
    except KeyNameError as exc:
        click.echo(f"elbctl: acl user: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if admin:
        wanted.append(acl.ADMIN_ROLE)
    _, store = open_store(store_url, "acl user")
    with etcd_errors("acl user"):
        for line in acl.add_user(store.client, name, _password(password_file), wanted):
            click.echo(line)


@acl_group.command("enable")
@store_option
@click.option("--root-password-file", required=True,
              type=click.Path(dir_okay=False, exists=True))
def acl_enable(store_url: str, root_password_file: str) -> None:
    """Create the root user and switch etcd authentication on."""
    from dcnet.elbstore import acl

    _, store = open_store(store_url, "acl enable")
    with etcd_errors("acl enable"):
        for line in acl.enable_auth(store.client, _password(root_password_file)):
            click.echo(line)


# ---------------------------------------------------------------------- backend --store


def run_backend_store(store_url: str, action: str, service: str, server: str,
                      weight: int | None) -> None:
    """``elbctl backend ACTION SERVICE SERVER --store URL``: record it in etcd; ``drain``
    and ``remove`` record a drain, wait until every director reports the server safe to
    stop or the deadline passed (:mod:`dcnet.elbstore.drainwait`: exit 0, 4 or 5), then
    ``remove`` takes the record out (unless it changed meanwhile)."""
    from dcnet.elbstore.drainwait import READDED_EXIT, wait_for_drain

    _, store = open_store(store_url, f"backend {action}")
    with etcd_errors(f"backend {action}"):
        if action == "add":
            click.echo(store.change_backend(action, service, server, weight).to_text())
            return
        change = store.change_backend("drain", service, server, weight,
                                      only_known=action == "remove")
        click.echo(change.to_text())
        if change.revision is None:
            return
        wait = wait_for_drain(store, change.service, change.server, change.revision,
                              say=click.echo)
        click.echo(wait.to_text())
        if action == "remove" and wait.exit_code != READDED_EXIT:
            click.echo(store.change_backend("remove", change.service, change.server,
                                            expect_record=wait.record).to_text())
    sys.exit(wait.exit_code)


def register(cli: click.Group, render_group: click.Group) -> None:
    for command in (push_cmd, history_cmd, rollback_cmd, status_cmd, agent_cmd, acl_group):
        cli.add_command(command)
