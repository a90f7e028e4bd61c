"""Unit tests of store URL parsing (dcnet.sysio.etcd.parse_url), one test per rule, and of
the client module staying cheap to import."""

from __future__ import annotations

import pytest

from dcnet.sysio.etcd import Settings, parse_url, prefix_range_end

pytestmark = pytest.mark.unit


def test_plain_url_with_hosts_and_prefix():
    settings = parse_url("etcd://10.0.0.1:2379,10.0.0.2:12379/dcnet")
    assert settings == Settings(endpoints=("http://10.0.0.1:2379", "http://10.0.0.2:12379"),
                                prefix="/dcnet")


def test_port_defaults_to_2379_and_prefix_to_empty():
    settings = parse_url("etcd://node1")
    assert settings.endpoints == ("http://node1:2379",)
    assert settings.prefix == ""


def test_trailing_slash_of_prefix_is_dropped():
    assert parse_url("etcd://h:1/a/b/").prefix == "/a/b"
    assert parse_url("etcd://h:1/").prefix == ""


def test_ipv6_hosts():
    settings = parse_url("etcds://[fd00::1]:2379,[fd00::2]/x")
    assert settings.endpoints == ("https://[fd00::1]:2379", "https://[fd00::2]:2379")


def test_tls_options_make_https(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for path in (ca, cert, key):
        path.write_text("x")
    settings = parse_url(f"etcd://h:2379/p?ca={ca}&cert={cert}&key={key}&timeout=2.5")
    assert settings.endpoints == ("https://h:2379",)
    assert (settings.ca, settings.cert, settings.key) == (str(ca), str(cert), str(key))
    assert settings.timeout == 2.5


def test_password_comes_from_file_without_trailing_newline(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    settings = parse_url(f"etcds://h/p?user=svc&password-file={secret}")
    assert (settings.user, settings.password) == ("svc", "s3cret")
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize("url, words", [
    ("http://h:2379", "scheme must be etcd:// or etcds://"),
    ("h:2379", "scheme must be etcd:// or etcds://"),
    ("etcd:///dcnet", "no HOST:PORT"),
    ("etcd://h:0", "bad port '0'"),
    ("etcd://h:70000", "bad port '70000'"),
    ("etcd://h:x1", "bad port 'x1'"),
    ("etcd://a:1,,b:2", "empty HOST:PORT"),
    ("etcd://[fd00::1:2379", "bad IPv6"),
    ("etcd://h?colour=blue", "unknown option 'colour'"),
    ("etcd://h?timeout=1&timeout=2", "option 'timeout' given twice"),
    ("etcd://h?timeout=", "option 'timeout' is empty"),
    ("etcd://h?timeout=soon", "timeout 'soon'"),
    ("etcd://h?timeout=-1", "timeout '-1'"),
    ("etcd://h?ca=/nonexistent/ca.pem", "ca file '/nonexistent/ca.pem' not found"),
    ("etcd://h?user=svc", "user= needs password-file="),
    ("etcd://h?password-file=/etc/hostname", "password-file= needs user="),
    ("etcd://h?user=svc&password-file=/nonexistent/pw", "cannot read password-file"),
])
def test_bad_urls_name_the_bad_part(url, words):
    with pytest.raises(ValueError) as caught:
        parse_url(url)
    assert words in str(caught.value)
    assert url in str(caught.value)


def test_cert_needs_key(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ValueError, match="cert= and key= must be given together"):
        parse_url(f"etcds://h?cert={cert}")


def test_empty_password_file_is_refused(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        parse_url(f"etcd://h?user=u&password-file={secret}")


def test_prefix_range_end():
    assert prefix_range_end(b"/a/") == b"/a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"") == b"\0"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_importing_the_client_loads_no_network_stack():
    import subprocess
    import sys

    code = ("import sys, dcnet.sysio.etcd; "
            "print(sorted(m for m in ('ssl', 'http.client', 'socket', 'pyroute2') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
