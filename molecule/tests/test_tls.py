"""TLS on :443 of the whole stack: the seed-001 SSL commands as written (on the host, where
`localhost` is the gateway), the protocol versions, HTTP/2 and the certificate's names."""

from __future__ import annotations

import shlex

import pytest


class Result:
    """A command's return code and output, decoded leniently (h2 frames are binary)."""

    def __init__(self, result) -> None:
        self.rc = result.rc
        self.stdout = result.stdout_bytes.decode(errors="replace")


def run(host, command: str) -> Result:
    return Result(host.run(f"timeout 20 bash -c {shlex.quote(command)}"))


def test_seed_curl_over_https(host):
    # "curl -k https://localhost/" and "curl -k --tlsv1.2 https://localhost/health"
    overview = run(host, "curl -k https://localhost/")
    assert overview.rc == 0
    assert "<title>" in overview.stdout
    health = run(host, "curl -k --tlsv1.2 https://localhost/health")
    assert health.rc == 0
    assert '"status"' in health.stdout


def test_seed_openssl_s_client(host):
    # "openssl s_client -connect localhost:443 -servername localhost -brief"
    result = run(
        host, "openssl s_client -connect localhost:443 -servername localhost -brief </dev/null 2>&1"
    )
    assert result.rc == 0, result.stdout
    assert "Protocol version: TLSv1.3" in result.stdout


@pytest.mark.parametrize("protocol", ["-tls1", "-tls1_1"])
def test_tls_10_and_11_refused(host, protocol):
    result = run(
        host,
        f"openssl s_client -connect localhost:443 {protocol} "
        "-cipher DEFAULT@SECLEVEL=0 </dev/null 2>&1",
    )
    assert result.rc != 0
    assert "alert protocol version" in result.stdout or "unsupported protocol" in result.stdout


def test_http2_by_alpn(host):
    result = run(host, "openssl s_client -connect localhost:443 -alpn h2,http/1.1 </dev/null 2>&1")
    assert "ALPN protocol: h2" in result.stdout


def test_no_weak_tls12_cipher(host):
    # CBC, RSA key exchange, DHE, 3DES, RC4, NULL: each offered alone must fail.
    for cipher in (
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
        "DES-CBC3-SHA",
        "NULL-SHA256",
    ):
        result = run(
            host,
            f"openssl s_client -connect localhost:443 -tls1_2 "
            f"-cipher '{cipher}:@SECLEVEL=0' </dev/null >/dev/null 2>&1",
        )
        assert result.rc != 0, cipher


def test_certificate_names_are_the_hosts(host):
    variables = host.ansible.get_variables()
    text = run(
        host,
        "openssl s_client -connect localhost:443 -servername localhost </dev/null "
        "2>/dev/null | openssl x509 -noout -ext subjectAltName",
    ).stdout
    for name in (
        f"DNS:{variables['inventory_hostname']}",
        f"IP Address:{variables['ansible_host']}",
        "DNS:localhost",
    ):
        assert name in text, name
    with host.sudo():
        key = host.file("/etc/nginx/tls/gateway.key")
        assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
