"""deploy/kubernetes renders (`kubectl kustomize`), every object is valid against the Kubernetes
schemas (kubernetes-validate, offline: the schemas ship with the package), and every setting the
crew-etl containers are given is one the service reads, with the required ones present.

No cluster runs here: what a cluster would add (scheduling, probes answering) is not tested.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.config import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.32.0"
VARIANTS = ["base", "overlays/with-pgbouncer"]
# On Kubernetes the embedded PostgreSQL cannot run (read-only root filesystem, and a pod's disk
# goes with it); an open trigger endpoint is a warning the service logs, not a deployment.
REQUIRED = {"DATABASE_URL", "INGEST_API_TOKEN"}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def render(variant: str) -> list[dict[str, Any]]:
    output = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / variant)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def crew_etl_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pods = [d["spec"]["template"]["spec"] for d in named(objects, "Deployment").values()]
    return [
        container
        for pod in pods
        for container in pod.get("initContainers", []) + pod["containers"]
        if container["image"].split(":")[0].endswith("crew-etl")
    ]


def environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> set[str]:
    """Every variable the container gets: `env` and the keys of its envFrom sources."""
    names = {variable["name"] for variable in container.get("env", [])}
    maps, secrets = named(objects, "ConfigMap"), named(objects, "Secret")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(maps[source["configMapRef"]["name"]]["data"])
        else:
            secret = secrets[source["secretRef"]["name"]]
            names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    return names


def setting_names() -> set[str]:
    names = set(Settings.model_fields)
    for field in Settings.model_fields.values():
        aliases = getattr(field.validation_alias, "choices", [])
        names |= {alias for alias in aliases if isinstance(alias, str)}
    return names


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_is_valid_against_the_kubernetes_schemas(variant: str) -> None:
    objects = render(variant)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    kinds = sorted({obj["kind"] for obj in objects})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]


def test_an_invalid_object_is_caught() -> None:
    (deployment,) = named(render("base"), "Deployment").values()
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_crew_etl_containers_get_settings_the_service_reads_and_every_required_one(
    variant: str,
) -> None:
    objects = render(variant)
    containers = crew_etl_containers(objects)
    assert [c["name"] for c in containers] == ["migrate", "api"]
    for container in containers:
        given = environment(objects, container)
        assert given - setting_names() == set(), container["name"]
        assert REQUIRED <= given, container["name"]


def test_the_api_pods_are_probed_bounded_and_unprivileged() -> None:
    (deployment,) = named(render("base"), "Deployment").values()
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in [api, *pod["initContainers"]]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_with_pgbouncer_the_service_goes_through_it_and_loads_direct() -> None:
    secret = named(render("overlays/with-pgbouncer"), "Secret")["crew-etl-secrets"]
    assert "@crew-etl-pgbouncer:" in secret["stringData"]["DATABASE_URL"]
    assert "@postgres:" in secret["stringData"]["DATABASE_DIRECT_URL"]
