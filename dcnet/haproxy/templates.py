"""The built-in jinja2 templates: ``haproxy.cfg.j2`` (global and defaults) and
``service.cfg.j2`` (one service: a frontend and a backend per TCP port; a port with
``mode: http`` gets ``mode http``, ``X-Forwarded-For``, HTTP timeouts and
``option idle-close-on-response``, so an old worker's keep-alive clients get
``Connection: close`` on their next answer after a reload).

They are kept here as strings so they ship with the package whatever the install
method. Operators override them without forking: a template directory
(``haproxy.templates`` in the model) may hold ``haproxy.cfg.j2``, ``service.cfg.j2``
(every service) and ``<JOBNAME>.cfg.j2`` (one service). An override can extend the
built-in one as ``builtin/service.cfg.j2`` and fill its empty blocks
(``frontend_options``, ``backend_options``) or replace any other block.
"""

from __future__ import annotations

GLOBAL = """\
global
    master-worker
    mworker-max-reloads {{ max_reloads }}
    maxconn {{ settings.maxconn }}
    hard-stop-after {{ settings.hard_stop_after }}s
    stats socket {{ paths.admin_socket }} mode 600 level admin
    server-state-file {{ paths.state_file }}
{%- block global_options %}{% endblock %}

defaults
    mode tcp
    timeout connect {{ ms(settings.timeout_connect) }}ms
    timeout client {{ ms(settings.timeout_client) }}ms
    timeout server {{ ms(settings.timeout_server) }}ms
    timeout queue {{ ms(settings.timeout_connect) }}ms
    retries 3
    option redispatch
    load-server-state-from-file global
{%- block defaults_options %}{% endblock %}
"""

SERVICE = """\
{%- for l in listeners %}
frontend {{ l.name }}
{%- for bind in l.binds %}
    bind {{ bind }}
{%- endfor %}
{%- if l.mode == "http" %}
    mode http
    option forwardfor
    option idle-close-on-response
    timeout http-request {{ ms(settings.timeout_http_request) }}ms
    timeout http-keep-alive {{ ms(settings.timeout_http_keep_alive) }}ms
{%- endif %}
    default_backend {{ l.name }}
{%- block frontend_options scoped %}{% endblock %}

backend {{ l.name }}
    # scheduler {{ l.scheduler }} -> balance {{ l.balance.algorithm }}
    {%- if not l.balance.exact %} (no exact match: {{ l.balance.note }}){% endif %}
{%- if l.mode == "http" %}
    mode http
{%- endif %}
    balance {{ l.balance.algorithm }}
{%- for option in l.balance.options %}
    {{ option }}
{%- endfor %}
{%- if l.persistence %}
    stick-table type ip size 1m expire {{ l.persistence }}s
    stick on src
{%- endif %}
{%- block health_check scoped %}
{%- if check.type == "http" %}
    option httpchk GET {{ check.path }}
    http-check expect status {{ check.expect_status }}
{%- endif %}
{%- if check.type != "none" %}
    timeout check {{ ms(check.timeout) }}ms
    default-server check inter {{ ms(check.interval) }}ms
    {%- raw %} {% endraw %}rise {{ check.rise }} fall {{ check.fall }}
    {%- if check.port %} port {{ check.port }}{% endif %}
{%- endif %}
{%- endblock %}
{%- block backend_options scoped %}{% endblock %}
{%- for line in l.server_lines %}
    {{ line }}
{%- endfor %}
{% endfor %}
"""

BUILTIN = {"haproxy.cfg.j2": GLOBAL, "service.cfg.j2": SERVICE}
