"""The Kubernetes manifests in deploy/ parse and hold what KubeRay and the job need."""

import re
from pathlib import Path

import pytest
import yaml

KUBERAY = Path(__file__).resolve().parents[1] / "deploy" / "kuberay"


def documents(name: str) -> dict[str, dict]:
    """The manifest's objects by kind (each kind once)."""
    docs = [doc for doc in yaml.safe_load_all((KUBERAY / name).read_text()) if doc]
    kinds = [doc["kind"] for doc in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {doc["kind"]: doc for doc in docs}


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return documents("rayjob.yaml")


@pytest.fixture(scope="module")
def triton() -> dict:
    return documents("triton.yaml")


def pods(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [group["template"] for group in cluster["workerGroupSpecs"]]


def test_rayjob_has_the_fields_kuberays_crd_requires(rayjob):
    job = rayjob["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    # HeadGroupSpec: rayStartParams and template; WorkerGroupSpec: groupName, min/maxReplicas,
    # rayStartParams, template (ray-operator/apis/ray/v1/raycluster_types.go)
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"]
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"]
    # rayStartParams are strings in the CRD (map[string]string)
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in cluster["workerGroupSpecs"]]:
        assert all(isinstance(value, str) for value in params.values())


def test_rayjob_runs_embed_products_on_ray_with_the_projects_image(rayjob):
    job = rayjob["RayJob"]
    assert re.fullmatch(r"jobs embed-products .*--executor ray.*", job["spec"]["entrypoint"])
    version = job["spec"]["rayClusterSpec"]["rayVersion"]
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{version}-" in dockerfile and "[ray]" in dockerfile
    images = {c["image"] for pod in pods(job) for c in pod["spec"]["containers"]}
    assert len(images) == 1 and images.pop().endswith(f":{version}")


def test_every_pod_reaches_triton_the_store_and_the_shared_index_directory(rayjob, triton):
    service = triton["Service"]
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    triton_url = f"grpc://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{grpc['port']}"
    claim = rayjob["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod in pods(rayjob["RayJob"]):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for container in pod["spec"]["containers"]:
            env = env_of(container)
            assert env["GRAPHSVC_TRITON_URL"] == triton_url
            assert env["GRAPHSVC_EXECUTOR"] == "ray" and env["GRAPHSVC_STORE"].startswith("arangodb://")
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            index_volume = volumes[mounts[env["GRAPHSVC_INDEX_DIR"]]]
            assert index_volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
            password_dir = str(Path(env["GRAPHSVC_ARANGO_PASSWORD_FILE"]).parent)
            assert "secret" in volumes[mounts[password_dir]]
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
            resources = container["resources"]
            assert resources["requests"] == resources["limits"] and {"cpu", "memory"} <= set(resources["limits"])


def test_triton_service_selects_the_deployments_pods_and_ports(triton):
    deployment, service = triton["Deployment"], triton["Service"]
    assert deployment["apiVersion"] == "apps/v1" and service["apiVersion"] == "v1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    named = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= named
    assert {8000, 8001, 8002} == {port["containerPort"] for port in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    models = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["claimName"] == triton["PersistentVolumeClaim"]["metadata"]["name"]
