"""The seed-001 gateway on :80, :443 (TLS) and :8080, and its TLS settings, asked on the host.

The stand-in app (conftest.echo_app) answers on every service's socket, so a route reaches
"its" service; the overview page and the short doc addresses come from the scenario's
service map (molecule.yml).
"""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import curl_response, sh

PLAIN = "http://127.0.0.1"
TLS = "https://127.0.0.1"
SEED_000 = "http://127.0.0.1:8080"
BASES = (PLAIN, TLS, SEED_000)
# Mozilla's guidelines 6.0, intermediate: the TLS 1.2 suites a P-256 (ECDSA) certificate
# can use, and the TLS 1.3 suites.
TLS12_EXPECTED = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_ALLOWED = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}


def fetch(host, url: str, *curl_args: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and body of one GET, not following redirects."""
    return curl_response(host, "-ksS", "-D", "-", *curl_args, url)


def services(host) -> list[dict]:
    return host.ansible.get_variables()["webstack_services"]


def s_client(host, *args: str, stdin: str = "") -> tuple[int, str]:
    """openssl s_client against :443; its return code and output (stdout and stderr)."""
    command = sh(
        "openssl", "s_client", "-connect", "127.0.0.1:443", "-servername", "localhost", *args
    )
    result = host.run(f"printf %s {shlex.quote(stdin)} | timeout 10 {command} 2>&1")
    # After an h2 handshake the server's binary SETTINGS frame follows the text.
    return result.rc, result.stdout_bytes.decode(errors="replace")


# --- Listeners and routes -----------------------------------------------------------------


def test_nginx_listens_on_80_443_and_8080(host):
    with host.sudo():
        listening = host.check_output("ss -Hltnp")
    for port in (80, 443, 8080):
        line = next((ln for ln in listening.splitlines() if f"0.0.0.0:{port} " in ln), "")
        assert '"nginx"' in line, port


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    "path", ["/health", "/api/items", "/users/docs", "/orders/openapi.json", "/payments/redoc"]
)
def test_same_routes_on_every_listener(host, echo_app, base, path):
    status, _, body = fetch(host, base + path)
    assert status == 200, body
    seen = json.loads(body)
    assert seen["path"] == path
    assert seen["headers"]["x-forwarded-proto"] == ("https" if base == TLS else "http")


def test_routes_reach_their_own_service(host, echo_app):
    # Each service has its own socket; the echo app tells them apart by nothing but the
    # route nginx chose, so ask nginx's config which socket serves which prefix.
    with host.sudo():
        config = host.check_output("/usr/local/sbin/nginx -T 2>/dev/null")
    for service in services(host):
        assert f"server unix:/run/webstack/{service['name']}.sock" in config, service["name"]


@pytest.mark.parametrize("base", BASES)
def test_overview_page_links_every_service(host, base):
    status, headers, body = fetch(host, base + "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    for service in services(host):
        prefix = service["prefix"]
        for link in (f"{prefix}/docs", f"{prefix}/redoc", f"{prefix}/openapi.json"):
            assert f'href="{link}"' in body, link
        assert f'id="service-{service["name"]}"' in body
    assert body.count("<tr id=") == len(services(host))


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    ("alias", "target"),
    [
        ("/user-docs", "/users/docs"),
        ("/order-docs", "/orders/docs"),
        ("/payment-docs", "/payments/docs"),
    ],
)
def test_short_doc_addresses_redirect_keeping_scheme_and_port(host, echo_app, base, alias, target):
    status, headers, _ = fetch(host, base + alias)
    assert status == 301
    assert headers["location"] == target  # relative: the client keeps its scheme and port
    landed = host.check_output(
        sh("curl", "-ksSL", "-o", "/dev/null", "-w", "%{url_effective}", base + alias)
    )
    assert landed == base + target


@pytest.mark.parametrize("base", BASES)
def test_directory_redirect_keeps_scheme_and_port(host, base):
    with host.sudo():
        host.check_output("install -d -m 0755 /usr/share/nginx/html/verify-dir")
        host.check_output("echo x > /usr/share/nginx/html/verify-dir/index.html")
    landed = host.check_output(
        sh(
            "curl",
            "-ksSL",
            "-o",
            "/dev/null",
            "-w",
            "%{url_effective} %{http_code}",
            base + "/verify-dir",
        )
    )
    assert landed == f"{base}/verify-dir/ 200"


def test_no_https_redirect_and_no_hsts_by_default(host):
    status, headers, _ = fetch(host, PLAIN + "/")
    assert status == 200
    _, tls_headers, _ = fetch(host, TLS + "/")
    assert "strict-transport-security" not in headers
    assert "strict-transport-security" not in tls_headers


def test_acme_challenges_are_served_on_port_80(host):
    path = "/var/lib/acme-challenge/.well-known/acme-challenge/verify-token"
    with host.sudo():
        host.check_output(f"install -d -m 0755 {shlex.quote(path.rsplit('/', 1)[0])}")
        host.check_output(f"echo token-content > {path}")
    status, headers, body = fetch(host, PLAIN + "/.well-known/acme-challenge/verify-token")
    assert (status, body) == (200, "token-content\n")
    assert headers["content-type"].startswith("text/plain")


# --- TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["-tls1", "-tls1_1"])
def test_old_tls_versions_are_refused(host, protocol):
    # The client is told to allow them (security level 0), so a failure is the server's.
    rc, output = s_client(host, protocol, "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0
    assert "alert protocol version" in output or "unsupported protocol" in output, output


@pytest.mark.parametrize(("protocol", "name"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_12_and_13_are_accepted(host, protocol, name):
    rc, output = s_client(host, protocol, "-brief")
    assert rc == 0, output
    assert f"Protocol version: {name}" in output


def test_http2_is_offered_by_alpn(host):
    rc, output = s_client(host, "-alpn", "h2,http/1.1")
    assert rc == 0
    assert "ALPN protocol: h2" in output
    version = host.check_output(
        sh("curl", "-ks", "-o", "/dev/null", "-w", "%{http_version}", TLS + "/")
    )
    assert version == "2"


def test_only_the_profiles_ciphers_are_accepted(host):
    """Every cipher suite this OpenSSL knows, offered alone: only the profile's succeed."""
    script = r"""
set -u
for c in $(openssl ciphers 'ALL:COMPLEMENTOFALL:@SECLEVEL=0' | tr ':' ' '); do
  if echo | timeout 5 openssl s_client -connect 127.0.0.1:443 -tls1_2 \
       -cipher "$c:@SECLEVEL=0" >/dev/null 2>&1; then echo "tls12 $c"; fi
done
for c in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256 \
         TLS_AES_128_CCM_SHA256 TLS_AES_128_CCM_8_SHA256; do
  if echo | timeout 5 openssl s_client -connect 127.0.0.1:443 -tls1_3 \
       -ciphersuites "$c" >/dev/null 2>&1; then echo "tls13 $c"; fi
done
"""
    out = host.check_output(f"bash -c {shlex.quote(script)}")
    accepted = [line.split() for line in out.splitlines()]
    tls12 = {name for kind, name in accepted if kind == "tls12"}
    tls13 = {name for kind, name in accepted if kind == "tls13"}
    assert tls12 == TLS12_EXPECTED
    assert tls13 and tls13 <= TLS13_ALLOWED


@pytest.mark.parametrize("protocol", ["-tls1_2", "-tls1_3"])
def test_sessions_are_resumed(host, protocol):
    session = f"/tmp/verify-session{protocol}"
    # The TLS 1.3 ticket comes after the handshake: read an answer before closing.
    request = "HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    rc, first = s_client(host, protocol, "-sess_out", session, "-ign_eof", stdin=request)
    assert rc == 0, first
    rc, second = s_client(host, protocol, "-sess_in", session, "-ign_eof", stdin=request)
    assert rc == 0, second
    assert "Reused, " in second, second
    host.run(f"rm -f {session}")


def test_default_certificate_is_self_signed_for_the_hosts_names(host):
    with host.sudo():
        text = host.check_output(
            "openssl x509 -in /etc/nginx/tls/gateway.crt -noout -subject -issuer "
            "-ext subjectAltName -enddate"
        )
        key = host.file("/etc/nginx/tls/gateway.key")
        assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    lines = text.splitlines()
    assert lines[0].replace("subject=", "") == lines[1].replace("issuer=", "")
    sans = text.split("Subject Alternative Name:", 1)[1]
    name = host.ansible.get_variables()["inventory_hostname"]
    address = host.ansible.get_variables()["ansible_host"]
    for expected in (
        f"DNS:{name}",
        f"IP Address:{address}",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ):
        assert expected in sans, expected
    # What a client gets is that certificate.
    served = host.check_output(
        "echo | openssl s_client -connect 127.0.0.1:443 -servername localhost 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256"
    )
    with host.sudo():
        on_disk = host.check_output(
            "openssl x509 -in /etc/nginx/tls/gateway.crt -noout -fingerprint -sha256"
        )
    assert served == on_disk


def test_certificate_and_key_never_readable_by_workers(host):
    with host.sudo():
        result = host.run("sudo -u www-data cat /etc/nginx/tls/gateway.key")
    assert result.rc != 0


def test_testssl_finds_only_modern_protocols_and_ciphers(host):
    """testssl.sh (Debian's), an independent scanner: protocols, cipher categories, FS."""
    with host.sudo():
        install = host.run(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
            "testssl.sh"
        )
        assert install.rc == 0, install.stderr
        host.run("rm -f /tmp/verify-testssl.json")
        host.run(
            "timeout 300 testssl --quiet --color 0 --warnings off "
            "--jsonfile /tmp/verify-testssl.json -p -s -f localhost:443"
        )
        findings = {
            f["id"]: f["finding"]
            for f in json.loads(host.file("/tmp/verify-testssl.json").content_string)
        }
    for protocol in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[protocol] == "not offered", protocol
    assert findings["TLS1_2"] == "offered"
    assert findings["TLS1_3"].startswith("offered")
    assert findings["ALPN_HTTP2"] == "h2"
    for weak in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "OBSOLETED", "STRONG_NOFS"):
        assert findings[f"cipherlist_{weak}"] == "not offered", weak
    assert findings["cipherlist_STRONG_FS"] == "offered"
    assert set(findings["FS_ciphers"].split()) <= TLS12_EXPECTED | TLS13_ALLOWED
