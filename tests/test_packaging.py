"""The packaging against what the daemon needs of it and gives it.

Under ``ProtectSystem=strict`` every path is read-only except those the unit
names, and the unit runs as the ``sprintd`` user: a file the example
configuration writes must be in a directory the unit makes writable, and a
file it reads must be readable by that user as packaging/README.md installs it.

The Prometheus alerting rules pass ``promtool check rules`` and their unit
tests (``promtool test rules``), and name only series a daemon exposes.
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from .daemons import NO_ORDERS, DaemonFactory, wait_for
from .scraping import PROMTOOL, scrape

REPO = Path(__file__).parents[1]
UNITS = sorted((REPO / "packaging" / "systemd").glob("*.service"))
RULES_DIR = REPO / "packaging" / "prometheus"
RULES = RULES_DIR / "sprintd.rules.yml"
RULES_TESTS = RULES_DIR / "sprintd.rules.test.yml"
# systemd's specifiers for the directories that *Directory= settings live under.
BASES = {"StateDirectory": "/var/lib", "LogsDirectory": "/var/log", "CacheDirectory": "/var/cache"}


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit, keys repeated as often as the file has them."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip())
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def writable(path: Path, instance: str) -> list[PurePosixPath]:
    """The directories the unit lets its service write, with ``%i`` filled in."""
    settings = unit_settings(path)
    dirs = [
        PurePosixPath(base) / value.replace("%i", instance)
        for key, base in BASES.items()
        for value in settings.get(key, [])
    ]
    dirs += [
        PurePosixPath(value.replace("%S", "/var/lib").replace("%i", instance))
        for value in settings.get("ReadWritePaths", [])
    ]
    return dirs


def secure() -> dict[str, object]:
    return tomllib.loads((REPO / "config" / "secure.toml").read_text())


@pytest.mark.parametrize("unit", UNITS, ids=lambda path: path.name)
def test_the_audit_log_of_the_example_config_is_writable(unit: Path) -> None:
    audit = secure()["audit"]
    assert isinstance(audit, dict)
    wanted = PurePosixPath(audit["file"]).parent
    instance = "enterprise"
    dirs = writable(unit, instance)
    if "@" in unit.name:
        # A template's instance writes under its own directory (secure.toml says so).
        wanted = wanted / instance
    assert any(wanted == d or d in wanted.parents for d in dirs), (wanted, dirs)


def test_the_settings_directory_is_readable_by_the_service_user() -> None:
    """Key files (``key_file``) live under /etc/sprintd: the install gives the group access."""
    keys = secure()["auth"]
    assert isinstance(keys, dict)
    files = [k["key_file"] for k in keys["keys"].values() if "key_file" in k]
    assert files and all(f.startswith("/etc/sprintd/") for f in files)
    readme = (REPO / "packaging" / "README.md").read_text()
    installs = [line for line in readme.splitlines() if re.match(r"install .*/etc/sprintd", line)]
    assert installs
    for line in installs:
        assert "-g sprintd" in line, line
        mode = re.search(r"-m (\d+)", line)
        assert mode is not None and int(mode.group(1), 8) & 0o040, line
    directories = [line for line in installs if line.startswith("install -d")]
    assert any("/etc/sprintd/keys" in line for line in directories)


# --- Prometheus alerting rules --------------------------------------------------------


def promtool(*args: str) -> str:
    """Run promtool in the rules' directory; its output, asserting it succeeded."""
    done = subprocess.run(
        [PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, timeout=60, check=False
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    return output


def test_the_alerting_rules_pass_promtool_check() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", RULES.name)


def test_the_alerting_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", RULES_TESTS.name)


def test_the_rules_name_only_series_a_daemon_exposes(daemon: DaemonFactory) -> None:
    """A family renamed in the daemon and not in the rules would never fire."""
    # Payments configured (nothing listens there), so that its families exist.
    processors = {
        "SPRINTD_PAYMENTS__DEFAULT_URL": "http://127.0.0.1:9",
        "SPRINTD_PAYMENTS__FALLBACK_URL": "http://127.0.0.1:9",
    }
    _, samples, types = scrape(daemon(env=processors))
    exposed = set(samples) | set(types)  # series, and the families the texts name
    for path in (RULES, RULES_TESTS):
        named = set(re.findall(r"\bsprintd_\w+", path.read_text()))
        assert named, path
        assert sorted(named - exposed) == [], path.name


NGINX_EXAMPLE = REPO / "packaging" / "nginx" / "sprintd.conf"
EXAMPLE_SOCKET = "/run/sprintd/http.sock"


def test_the_nginx_example_socket_is_in_the_units_runtime_directory() -> None:
    assert f"server unix:{EXAMPLE_SOCKET};" in NGINX_EXAMPLE.read_text()
    runtime = unit_settings(REPO / "packaging" / "systemd" / "sprintd.service")["RuntimeDirectory"]
    assert [PurePosixPath("/run") / name for name in runtime] == [
        PurePosixPath(EXAMPLE_SOCKET).parent
    ]


# The example is a site for nginx's http block: this wraps it to run as a
# test's own nginx, in its directory, on a free port.
NGINX_MAIN = """daemon off;
user root root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/sprintd.conf;
}}
"""


def test_nginx_with_the_example_reaches_sprintd_over_its_unix_socket(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    sock = tmp_path / "http.sock"
    daemon(env={**NO_ORDERS, "SPRINTD_SERVER__UDS": str(sock)})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    example = NGINX_EXAMPLE.read_text()
    upstream = f"server unix:{EXAMPLE_SOCKET};"
    site = example.replace(upstream, f"server unix:{sock};").replace(
        "listen 80;", f"listen 127.0.0.1:{port};"
    )
    assert upstream in example and f"127.0.0.1:{port}" in site
    front = tmp_path / "nginx"
    front.mkdir()
    (front / "sprintd.conf").write_text(site)
    (front / "nginx.conf").write_text(NGINX_MAIN.format(dir=front))
    nginx = subprocess.Popen(
        ["nginx", "-p", str(front), "-c", str(front / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def answered() -> tuple[int, str | None] | None:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                client.request("GET", "/v1/stats")
                response = client.getresponse()
                response.read()
            except OSError:
                return None
            finally:
                client.close()
            return response.status, response.getheader("x-request-id")

        status, request_id = wait_for(answered)
        assert status == 200
        # nginx's $request_id, passed on by the example, echoed by sprintd.
        assert request_id is not None and re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    finally:
        nginx.terminate()
        nginx.wait(10)
