"""The service definitions: systemd units verified by systemd-analyze itself, launchd plists
parsed by plistlib, and scripts/install-service run for real into a staging directory
(--destdir) and in --dry-run mode without root."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hfd.daemon.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
LAUNCHD = ROOT / "launchd"
INSTALL = ROOT / "scripts" / "install-service"
HFD_BIN = Path(sys.executable).with_name("hfd")


def unit_directives(path: Path) -> dict[str, list[str]]:
    """``Key`` -> values, over all sections (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def staged_unit(tmp_path: Path, source: Path, *extra: Path) -> Path:
    """The unit as the installer writes it (ExecStart pointing at a real hfd), with drop-ins
    appended (systemd merges repeated sections the same way)."""
    text = source.read_text().replace("/usr/local/bin/hfd", str(HFD_BIN))
    for dropin in extra:
        text += "\n" + dropin.read_text()
    out = tmp_path / "hfd.service"
    out.write_text(text)
    return out


def verify(unit: Path, *, user: bool = False) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    env = dict(os.environ)
    if user:
        runtime = unit.parent / "xdg"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    cmd = [tool, *(["--user"] if user else []), "verify", str(unit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    # Unknown or misspelt directives are only warnings to systemd: treat any line about our
    # file as a failure too.
    about_unit = [line for line in (proc.stdout + proc.stderr).splitlines() if str(unit) in line]
    assert proc.returncode == 0 and not about_unit, proc.stdout + proc.stderr


def test_system_unit_verifies(tmp_path: Path) -> None:
    verify(staged_unit(tmp_path, SYSTEMD / "hfd.service"))


@pytest.mark.parametrize("dropin", ["gpu-nvidia.conf", "gpu-amd-intel.conf"])
def test_gpu_dropins_verify(tmp_path: Path, dropin: str) -> None:
    verify(staged_unit(tmp_path, SYSTEMD / "hfd.service", SYSTEMD / "hfd.service.d" / dropin))


def test_user_unit_verifies(tmp_path: Path) -> None:
    verify(staged_unit(tmp_path, SYSTEMD / "hfd-user.service"), user=True)


def test_system_unit_directives() -> None:
    d = unit_directives(SYSTEMD / "hfd.service")
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["User"] == one["Group"] == "hfd"
    assert "HFD_SYSTEM=1" in d["Environment"]
    for key in ("StateDirectory", "CacheDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert one[key] == "hfd"
    assert one["RuntimeDirectoryMode"] == "0750"
    assert one["Restart"] == "on-failure" and one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == "" and one["NoNewPrivileges"] == "yes"
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
    # systemd must not kill the daemon while it lets in-flight requests finish.
    grace = Settings.__dataclass_fields__["grace_period"].default
    assert float(one["TimeoutStopSec"]) > float(grace) + 5  # type: ignore[arg-type]
    assert float(one["WatchdogSec"]) > 0


@pytest.mark.parametrize(("name", "system"), [("dev.hfd.agent.plist", False), ("dev.hfd.daemon.plist", True)])
def test_plists_parse(name: str, system: bool) -> None:
    with (LAUNCHD / name).open("rb") as fh:
        plist = plistlib.load(fh)
    assert plist["Label"] == name.removesuffix(".plist")
    assert plist["ProgramArguments"][1:] == ["serve"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["StandardErrorPath"].endswith(".log") and plist["StandardOutPath"].endswith(".log")
    assert plist["ExitTimeOut"] > Settings.__dataclass_fields__["grace_period"].default  # type: ignore[operator]
    env = plist["EnvironmentVariables"]
    if system:
        assert env["HFD_SYSTEM"] == "1" and plist["UserName"] == "_hfd"
        assert env["HFD_STATE_DIR"].startswith("/usr/local/var/")
        # The environment is read by the settings module as is.
        s = load_settings(environ={k: v for k, v in env.items() if k != "HFD_CONFIG_FILE"})
        assert s.ipc_mode == 0o660 and s.ipc_group == "_hfd" and str(s.state_dir) == "/usr/local/var/hfd"
    else:
        assert "UserName" not in plist and "HFD_SYSTEM" not in env


def run_install(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return subprocess.run(
        [str(INSTALL), "--bin", str(HFD_BIN), *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the systemd layout")
def test_install_into_destdir_is_idempotent_and_uninstall_keeps_state(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    first = run_install("--destdir", str(dest), "--gpu", "nvidia")
    assert first.returncode == 0, first.stderr
    unit = dest / "etc/systemd/system/hfd.service"
    assert f"ExecStart={HFD_BIN} serve" in unit.read_text()
    assert (dest / "etc/systemd/system/hfd.service.d/gpu.conf").read_text() == (
        SYSTEMD / "hfd.service.d/gpu-nvidia.conf"
    ).read_text()
    assert (dest / "usr/lib/sysusers.d/hfd.conf").read_text() == (SYSTEMD / "hfd.sysusers").read_text()
    config = dest / "etc/hfd/config.toml"
    settings = load_settings(config_file=config, environ={})
    assert settings.http_host == "127.0.0.1"

    # Re-running changes nothing and keeps the admin's config.
    config.write_text(config.read_text() + "\n[daemon]\nlog_level = 'debug'\n")
    edited = config.read_text()
    again = run_install("--destdir", str(dest), "--gpu", "nvidia")
    assert again.returncode == 0, again.stderr
    assert f"unchanged: {unit}" in again.stdout and f"kept existing: {config}" in again.stdout
    assert config.read_text() == edited

    state = dest / "var/lib/hfd"
    state.mkdir(parents=True)
    (state / "keys.duckdb").write_bytes(b"x")
    gone = run_install("--destdir", str(dest), "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists() and not (dest / "etc/systemd/system/hfd.service.d").exists()
    assert (state / "keys.duckdb").exists() and config.exists()
    purged = run_install("--destdir", str(dest), "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not state.exists() and not config.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the systemd layout")
def test_user_install_into_destdir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dest = tmp_path / "root"
    out = run_install("--user", "--destdir", str(dest), home=home)
    assert out.returncode == 0, out.stderr
    unit = dest / str(home).lstrip("/") / ".config/systemd/user/hfd.service"
    assert f"ExecStart={HFD_BIN} serve" in unit.read_text()
    assert (unit.stat().st_mode & 0o777) == 0o644


def test_dry_run_changes_nothing_and_needs_no_root() -> None:
    watched = [
        Path("/etc/systemd/system/hfd.service"),
        Path("/etc/hfd"),
        Path("/usr/lib/sysusers.d/hfd.conf"),
    ]
    before = [p.exists() for p in watched]
    cmd = [str(INSTALL), "--dry-run", "--bin", str(HFD_BIN)]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        # Show it needs no root by running it as nobody.
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": "/tmp"}
    )
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout
    if sys.platform.startswith("linux"):
        assert "+ systemctl enable --now hfd.service" in proc.stdout
        assert "/etc/systemd/system/hfd.service" in proc.stdout
    assert [p.exists() for p in watched] == before


def test_installer_rejects_bad_options() -> None:
    assert run_install("--gpu", "voodoo").returncode == 2
    assert run_install("--purge").returncode == 2
    assert run_install("--frobnicate").returncode == 2
