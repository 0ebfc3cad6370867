"""What ships for running a server: the LICENSE the package metadata names, the hardened
systemd unit and its drop-in for one process of several (``systemd-analyze verify`` where
systemd is present), the example TOML,
and the warning for listening beyond loopback without TLS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sealpost.server.config import ServerConfig, load_config
from sealpost.server.run import plaintext_warning

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "sealpost.service"
CLUSTER = ROOT / "deploy" / "sealpost-cluster.conf"  # its drop-in for one process of several


def test_license_file_matches_the_package_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def _directives(path: Path = UNIT) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_runs_the_server_hardened_as_its_own_user() -> None:
    unit = _directives()
    assert unit["User"] == ["sealpost"] and unit["StateDirectory"] == ["sealpost"]
    assert unit["Environment"][0] == "SEALPOST_DATA=/var/lib/sealpost"
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "StateDirectoryMode": "0700",
        "CapabilityBoundingSet": "",
    }.items():
        assert unit[key] == [value], key
    assert unit["ExecStart"][0].endswith("/bin/sealpost server")


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (no systemd): the unit is unchecked")
    # verify wants the ExecStart program to exist: point it at this venv's sealpost
    sealpost = Path(sys.executable).with_name("sealpost")
    unit = tmp_path / "sealpost.service"
    unit.write_text(UNIT.read_text().replace("/opt/sealpost/bin/sealpost", str(sealpost)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "sealpost.service" in line
    ]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def test_the_cluster_drop_in_shares_the_data_directory_and_keeps_urls_out_of_the_unit() -> None:
    drop_in = _directives(CLUSTER)
    data = "/srv/sealpost"
    assert drop_in["Environment"] == [f"SEALPOST_DATA={data}"]
    # ProtectSystem=strict (kept from the unit) would leave the shared mount read-only.
    assert drop_in["ReadWritePaths"] == [data] and drop_in["RequiresMountsFor"] == [data]
    # The URLs carry passwords: a file of mode 0640, never Environment= (systemctl show).
    assert drop_in["EnvironmentFile"] == ["/etc/sealpost/cluster.env"]
    assert not any("DATABASE" in v or "REDIS" in v for v in drop_in["Environment"])
    # A drop-in's ExecStart= adds to the unit's unless it is emptied first.
    assert drop_in["ExecStart"][0] == "" and len(drop_in["ExecStart"]) == 2
    assert drop_in["ExecStart"][1].startswith(_directives()["ExecStart"][0])
    assert "ProtectSystem" not in drop_in and "User" not in drop_in  # the unit's, unchanged


def test_systemd_analyze_verifies_the_unit_with_its_cluster_drop_in(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (no systemd): the drop-in is unchecked")
    sealpost = str(Path(sys.executable).with_name("sealpost"))
    (tmp_path / "sealpost.service.d").mkdir()
    for source, target in (
        (UNIT, "sealpost.service"),
        (CLUSTER, "sealpost.service.d/cluster.conf"),
    ):
        text = source.read_text().replace("/opt/sealpost/bin/sealpost", sealpost)
        (tmp_path / target).write_text(text)
    # By name, on a unit path of its own: verify then reads the unit's drop-ins too.
    result = subprocess.run(
        [analyze, "verify", "sealpost.service"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "sealpost.service" in line
    ]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def test_the_example_config_is_a_valid_server_config(tmp_path: Path) -> None:
    config = load_config(
        config_file=ROOT / "deploy" / "sealpost.toml",
        environ={"SEALPOST_DATA": str(tmp_path)},
        flags={},
    )
    assert (config.host, config.registration) == ("127.0.0.1", "invite")
    assert plaintext_warning(config) is None


def test_listening_beyond_loopback_without_tls_warns_why(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.7", "chat.example.org"):
        warning = plaintext_warning(ServerConfig(data=tmp_path, host=host))
        assert warning is not None and "without TLS" in warning and "--tls-cert" in warning
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert plaintext_warning(ServerConfig(data=tmp_path, host=host)) is None
    tls = ServerConfig(data=tmp_path, host="0.0.0.0", tls_cert="c.pem", tls_key="k.pem")
    assert plaintext_warning(tls) is None
