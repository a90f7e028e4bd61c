"""Pure parts of the haproxy target: runtime answers parsed from captured output, the
running and desired state, which changes go through the runtime API and which need a
reload, the checks that a file carries the changes staged for it, the read fingerprint,
the order of the kinds, and the rules of the model's haproxy section."""

from __future__ import annotations

import dataclasses

import pytest

from dcnet.haproxy import state as st
from dcnet.haproxy.backend import HAProxyTarget, read_fingerprint
from dcnet.haproxy.carry import FILE_SERVER, FileView, NotCarried, check_carried, file_servers
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import Renderer, parse_file, render
from dcnet.haproxy.runtime import parse_servers_state, parse_show_proc
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import ModelError
from dcnet.plan import Action, Change, Plan, diff

pytestmark = pytest.mark.unit
PATHS = Paths(run_dir="/run/h")
RS1, RS2, RS3 = (hlab.server_address(i) for i in (1, 2, 3))
B = f"{hlab.JOB}:80"

HEADER = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state "
          "srv_uweight srv_iweight srv_time_since_last_change srv_check_status "
          "srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id "
          "srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
          "srv_check_addr srv_agent_addr srv_agent_port\n")


def row(srv_id, addr, admin, weight, port=8080):
    return (f"3 {B} {srv_id} s{srv_id} {addr} 2 {admin} {weight} {weight} 1 15 3 4 6 0 0 0 "
            f"- {port} - 0 0 - - 0\n")


SHOW_PROC = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
5591            master          4 [failed: 1]   0d00h16m43s     2.6.12-1+deb12u4
# workers
17184           worker          0               0d00h00m08s     2.6.12-1+deb12u4
# old workers
12897           worker          1               0d00h01m08s     2.6.12-1+deb12u4
# programs
"""


def test_show_proc_is_parsed():
    info = parse_show_proc(SHOW_PROC)
    assert (info.master_pid, info.reloads, info.failed) == (5591, 4, 1)
    assert info.current_worker == 17184 and info.old_workers == [12897]


def test_servers_state_rows_free_drain_and_ready():
    rows = parse_servers_state(HEADER + row(1, RS1, 0, 10) + row(2, RS2, 8, 5)
                               + row(3, "0.0.0.0", 5, 1) + row(4, RS3, 4, 7))
    assert [r.free for r in rows] == [False, False, True, False]   # 0x04 alone: filled slot
    assert rows[0].attrs() == {"state": "ready", "weight": 10}
    assert rows[1].attrs() == {"state": "drain"}
    assert rows[3].key == f"{RS3}:8080"


def running(servers):
    """A running HAProxy as the back end reads it: its file and its runtime rows."""
    model = hlab.model_of(hlab.model_data(servers))
    parsed = parse_file(render(model, PATHS).text)
    rows = parse_servers_state(HEADER + "".join(
        row(i, a, 0 if w else 8, w or 1) for i, (a, w) in enumerate(servers.items(), 1))
        + "".join(row(i, "0.0.0.0", 5, 1) for i in range(len(servers) + 1,
                                                         len(servers) + 5)))
    return parsed, rows


def plan_for(servers_now, servers_wanted, **haproxy):
    parsed, rows = running(servers_now)
    live = st.live_slots(rows, {B})
    wanted = hlab.model_of(hlab.model_data(servers_wanted, **haproxy))
    changes = diff(st.current_state(parsed, rows),
                   st.desired_state(wanted, Renderer(wanted, PATHS)))
    return st.classify(changes, wanted, live)


def test_running_state_equal_to_the_model_has_no_changes():
    split = plan_for({RS1: 10, RS2: 0}, {RS1: 10, RS2: 0})
    assert split.runtime == () and split.reload == ()


def test_membership_weight_and_drain_go_through_the_runtime_api():
    split = plan_for({RS1: 10, RS2: 5}, {RS1: 0, RS3: 5})
    assert [(c.action.value, c.key[1]) for c in split.runtime] == [
        ("create", f"{RS3}:8080"), ("update", f"{RS1}:8080"), ("delete", f"{RS2}:8080")]
    assert split.reload == ()


def test_settings_changes_and_slot_exhaustion_need_a_reload():
    split = plan_for({RS1: 10}, {RS1: 10}, timeout_client=9)
    assert [c.kind for c in split.reload] == ["global"] and split.runtime == ()
    many = {hlab.server_address(i): 1 for i in range(1, 8)}      # 7 > 1 + 4 slots
    split = plan_for({RS1: 10}, many)
    assert {c.kind for c in split.reload} == {"server"} and len(split.reload) == 6
    assert [c.key[1] for c in split.runtime] == [f"{RS1}:8080"]   # its weight, at runtime
    assert len(split.layouts[B]) == 1 + 6 + 4


def test_haproxy_section_settings_and_defaults():
    m = hlab.model_of(hlab.model_data({RS1: 1}, timeout_connect=2.5, templates="t"))
    assert (m.haproxy.timeout_connect, m.haproxy.templates, m.haproxy.hard_stop_after) == \
        (2.5, "t", 30)


def test_haproxy_section_rejects_bad_values():
    with pytest.raises(ModelError, match=r"haproxy.hard_stop_after: must be between 1"):
        hlab.model_of(hlab.model_data({RS1: 1}, hard_stop_after=0))
    with pytest.raises(ModelError, match=r"haproxy.timeout_client: must be a number"):
        hlab.model_of(hlab.model_data({RS1: 1}, timeout_client="x"))


def test_shared_listen_addresses_need_distinct_ports():
    data = hlab.model_data({RS1: 1}, services=2)
    data["services"][1]["ports"][0]["port"] = 80
    with pytest.raises(ModelError, match=r"services\[1\]\.ports\[0\]\.port: tcp port 80 is "
                                         r"also used by services\[0\]"):
        hlab.model_of(data)
    del data["haproxy"]["listen"]          # each service binds its own VIP: fine
    assert len(hlab.model_of(data).services) == 2


def test_paths_from_options_or_environment():
    env = {"DCNET_HAPROXY_RUN_DIR": "/srv/h", "DCNET_HAPROXY_CONFIG": "/etc/h.cfg"}
    paths = Paths.from_env(environ=env)
    assert (paths.admin_socket, paths.config, paths.last_known_good) == \
        ("/srv/h/admin.sock", "/etc/h.cfg", "/etc/h.cfg.lkg")
    assert Paths.from_env("/x", environ=env).master_socket == "/x/master.sock"
    assert Paths.from_env(environ={}).config == "/run/dcnet-haproxy/haproxy.cfg"
    assert Paths(run_dir="/x").master_argv()[:4] == ["haproxy", "-W", "-S",
                                                     "/x/master.sock,mode,600"]


def test_a_file_carries_the_global_service_and_server_changes_it_was_rendered_for():
    before = hlab.model_of(hlab.model_data({RS1: 10}))
    after = hlab.model_of(hlab.model_data({RS1: 10, RS2: 0}, services=2, timeout_client=9))
    changes = diff(st.desired_state(before, Renderer(before, PATHS)),
                   st.desired_state(after, Renderer(after, PATHS)))
    new_text, old_text = render(after, PATHS).text, render(before, PATHS).text
    kinds = {c.kind for c in changes}
    assert kinds == {"global", "service", "server"}
    for change in changes:
        if change.kind == "server":
            change = Change(change.action, FILE_SERVER, change.key, change.old, change.new)
        check_carried(change, FileView(new_text))
        with pytest.raises(NotCarried):
            check_carried(change, FileView(old_text))
    assert len(changes) == 5       # global, service 2, its server, rs2 in both services


def test_a_kept_invalid_service_must_keep_its_running_block():
    before = hlab.model_of(hlab.model_data({RS1: 10}))
    after = hlab.model_of(hlab.model_data({RS1: 10}, timeout_client=9))
    old = st.desired_state(before, Renderer(before, PATHS))[("service", (hlab.JOB,))]
    change = Change(Action.UPDATE, "service", (hlab.JOB,), old=old,
                    new={**old, "config": "different"})
    text = render(before, PATHS).text
    assert "invalid" in check_carried(change, FileView(text), kept_invalid=[hlab.JOB])
    with pytest.raises(NotCarried, match="the plan meant"):
        check_carried(change, FileView(text))
    with pytest.raises(NotCarried):
        check_carried(change, FileView(render(after, PATHS).text), kept_invalid=["other"])


def test_server_lines_are_read_back_with_slot_weight_and_drain():
    m = hlab.model_of(hlab.model_data({RS1: 10, RS2: 0}))
    servers = file_servers(render(m, PATHS).text)
    assert servers == {(B, f"{RS1}:8080"): {"state": "ready", "weight": 10, "slot": 0},
                       (B, f"{RS2}:8080"): {"state": "drain", "slot": 1}}


def test_the_read_fingerprint_ignores_health_but_not_weight_or_membership():
    rows = parse_servers_state(HEADER + row(1, RS1, 0, 10) + row(2, "0.0.0.0", 5, 1))
    same = [dataclasses.replace(rows[0], op_state=0), rows[1]]
    assert read_fingerprint("x", rows) == read_fingerprint("x", same)
    assert read_fingerprint("x", rows) != read_fingerprint("y", rows)
    for changed in (dataclasses.replace(rows[0], weight=11),
                    dataclasses.replace(rows[1], admin_state=0, address=RS2)):
        others = [r for r in rows if r.server != changed.server]
        assert read_fingerprint("x", rows) != read_fingerprint("x", [*others, changed])


def test_the_kind_order_puts_staging_and_runtime_before_the_config_step():
    changes = [Change(Action.UPDATE, "config", ("reload",), {"file": "a"}, {"file": "b"}),
               Change(Action.CREATE, "server", (B, "x"), new={}),
               Change(Action.UPDATE, "global", ("haproxy",), {}, {"a": 1}),
               Change(Action.CREATE, FILE_SERVER, ("new:80", "y"), new={}),
               Change(Action.DELETE, "server", (B, "z"), old={}),
               Change(Action.CREATE, "service", ("new",), new={})]
    plan = Plan.build("haproxy", changes, HAProxyTarget.kind_order)
    assert [(c.action.value, c.kind) for c in plan.changes] == [
        ("update", "global"), ("create", "service"), ("create", FILE_SERVER),
        ("create", "server"), ("update", "config"), ("delete", "server")]
