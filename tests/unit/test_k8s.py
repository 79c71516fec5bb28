"""deploy/k8s checked offline, in layers: the API's own JSON schemas (kubeconform -strict,
the schemas of the kubernetes-validate wheel), then rules that span objects (selectors,
probe ports, autoscaler targets, resources, the restricted security profile)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
KUBERNETES = "1.37.0"
KUBECONFORM = ROOT / ".cache" / "bin" / "kubeconform"
KUSTOMIZE = ROOT / ".cache" / "bin" / "kustomize"
# What is deployed: kustomize's output for the base and for each overlay.
RENDERS = {"base": "deploy/k8s/base", "prod": "deploy/k8s/overlays/prod"}


def tool(path: Path, name: str) -> str:
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: `make k8s-tools`"
    return found


def _base_files() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((BASE / name).read_text())
        if doc
    ]


OBJECTS = _base_files()  # the files as written (checkov and the skip notes read them)
_RENDERED: dict[str, str] = {}


def rendered_text(name: str) -> str:
    if name not in _RENDERED:
        done = subprocess.run(
            [tool(KUSTOMIZE, "kustomize"), "build", str(ROOT / RENDERS[name])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        _RENDERED[name] = done.stdout
    return _RENDERED[name]


@pytest.fixture(params=list(RENDERS))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Every object of one render (base, prod)."""
    return [d for d in yaml.safe_load_all(rendered_text(request.param)) if d]


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def by_name(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    return found


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from workload["spec"]["template"]["spec"]["containers"]


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's strict schemas, their references made file URLs kubeconform resolves.

    They reference ``/api/_definitions.json`` under an ``https://kubernetes.io`` ``$id``
    (kubernetes-validate maps it itself); kubeconform would fetch that URL.
    """
    source = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = f"v{KUBERNETES}-local-strict"
    out = tmp_path_factory.mktemp("k8s-schemas") / folder
    out.mkdir()
    definitions = f'"{(out / "_definitions.json").as_uri()}'
    for schema in (source / folder).iterdir():
        text = schema.read_text().replace('"/api/_definitions.json', definitions)
        (out / schema.name).write_text(text)
    return out.parent


def kubeconform(schemas: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    binary = tool(KUBECONFORM, "kubeconform")
    location = f"{schemas}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}/"
    location += "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    return subprocess.run(
        [binary, "-strict", "-summary", "-kubernetes-version", KUBERNETES,
         "-schema-location", location, "-skip", "Kustomization", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("render", list(RENDERS))
def test_every_object_is_valid_for_the_api_strictly(
    schemas: Path, tmp_path: Path, render: str
) -> None:
    text = rendered_text(render)
    (tmp_path / f"{render}.yaml").write_text(text)
    done = kubeconform(schemas, tmp_path / f"{render}.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    count = len([d for d in yaml.safe_load_all(text) if d])
    assert count >= 18 and f"Valid: {count}, Invalid: 0, Errors: 0" in done.stdout


def test_the_schema_check_catches_a_misspelt_field(schemas: Path, tmp_path: Path) -> None:
    text = (BASE / "service.yaml").read_text().replace("  replicas: 2", "  replica: 2", 1)
    (tmp_path / "bad.yaml").write_text(text)
    done = kubeconform(schemas, tmp_path / "bad.yaml")
    assert done.returncode != 0 and "additional properties 'replica' not allowed" in done.stdout


def test_selectors_select_their_pods_and_services_reach_them(objects: list[dict[str, Any]]) -> None:
    for workload in of_kind(objects, "Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
    pods = [w["spec"]["template"] for w in of_kind(objects, "Deployment")]
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in of_kind(objects, kind):
            wanted = obj["spec"]["selector"]
            wanted = wanted.get("matchLabels", wanted)
            hits = [p for p in pods if wanted.items() <= p["metadata"]["labels"].items()]
            assert len(hits) == 1, f"{kind} {obj['metadata']['name']} selects {len(hits)}"


def test_service_and_probe_ports_are_ports_the_container_declares(
    objects: list[dict[str, Any]],
) -> None:
    for workload in of_kind(objects, "Deployment"):
        named = {
            p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", [])
        }
        for c in containers(workload):
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c:
                    check = c[probe].get("httpGet") or c[probe]["tcpSocket"]
                    port = check["port"]
                    assert port in named or port in named.values(), (c["name"], probe)
        for service in of_kind(objects, "Service"):
            if (
                service["spec"]["selector"].items()
                <= workload["spec"]["template"]["metadata"]["labels"].items()
            ):
                for port in service["spec"]["ports"]:
                    assert port["targetPort"] in named, service["metadata"]["name"]


def test_servers_are_probed_on_their_real_endpoints(objects: list[dict[str, Any]]) -> None:
    service = next(containers(by_name(objects, "Deployment", "recflow-service")))
    assert service["readinessProbe"]["httpGet"]["path"] == "/readyz"  # bento/service.py
    assert service["livenessProbe"]["httpGet"]["path"] == "/livez"
    collector = next(containers(by_name(objects, "Deployment", "recflow-collector")))
    assert collector["readinessProbe"]["httpGet"]["path"] == "/healthz"  # jobs/stream/collector.py


def test_autoscalers_target_deployments_that_exist_and_never_fight_a_disruption_budget(
    objects: list[dict[str, Any]],
) -> None:
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        by_name(objects, "Deployment", target["name"])
        budgets = [
            p
            for p in of_kind(objects, "PodDisruptionBudget")
            if p["metadata"]["name"] == target["name"]
        ]
        for budget in budgets:
            assert budget["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    metrics = {
        m["type"]
        for m in by_name(objects, "HorizontalPodAutoscaler", "recflow-service")["spec"]["metrics"]
    }
    assert metrics == {"Resource", "Pods"}  # CPU and a request rate


QUANTITY = re.compile(r"^([0-9.]+)(m|Ki|Mi|Gi)?$")


def quantity(value: str | int) -> float:
    number, unit = QUANTITY.fullmatch(str(value)).groups()  # type: ignore[union-attr]
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[unit]
    return float(number) * scale


def test_every_container_requests_no_more_than_its_limits(objects: list[dict[str, Any]]) -> None:
    for workload in of_kind(objects, "Deployment"):
        for c in containers(workload):
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            assert set(requests) == set(limits) == {"cpu", "memory"}, c["name"]
            for resource in requests:
                assert quantity(requests[resource]) <= quantity(limits[resource]), c["name"]


def test_every_pod_meets_the_restricted_security_profile(objects: list[dict[str, Any]]) -> None:
    namespace = by_name(objects, "Namespace", "recflow")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in of_kind(objects, "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        # A token only for a service account a RoleBinding grants something (Spark's driver
        # creates its executor pods); every other pod calls no Kubernetes API.
        bound = {
            s["name"]
            for b in of_kind(objects, "RoleBinding")
            for s in b["subjects"]
            if s["kind"] == "ServiceAccount"
        }
        assert pod["automountServiceAccountToken"] is (pod["serviceAccountName"] in bound)
        for c in containers(workload):
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]


def test_secrets_come_from_the_secret_and_settings_are_real(objects: list[dict[str, Any]]) -> None:
    from jobs.config import Settings

    settings = {f"RECFLOW_{name.upper()}" for name in Settings.model_fields}
    config = by_name(objects, "ConfigMap", "recflow-settings")["data"]
    assert set(config) <= settings, set(config) - settings
    assert not {"RECFLOW_PUBLISH_SECRET", "RECFLOW_SUBJECT_SECRET"} & set(config)
    for workload in of_kind(objects, "Deployment"):
        for c in containers(workload):
            for env in c.get("env", []):
                assert env["name"] in settings, env["name"]
                if env["name"].endswith(("_SECRET", "_CONNECTION")):
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "recflow-secrets"


def test_every_claimed_volume_is_declared(objects: list[dict[str, Any]]) -> None:
    claims = {p["metadata"]["name"] for p in of_kind(objects, "PersistentVolumeClaim")}
    for workload in of_kind(objects, "Deployment"):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume


CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def test_every_checkov_skip_says_why() -> None:
    for obj in OBJECTS:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                assert re.fullmatch(r"CKV2?_K8S_\d+=.{40,}", value), (
                    obj["metadata"]["name"],
                    value,
                )


@pytest.mark.slow
def test_checkovs_kubernetes_policies_pass() -> None:
    import json

    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: `make checkov` installs it (make test does)")
    done = subprocess.run(
        [str(CHECKOV), "-d", str(BASE), "--framework", "kubernetes", "--skip-download",
         "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 200
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_35", "CKV_K8S_38", "CKV_K8S_43"}


def executor_template(objects: list[dict[str, Any]]) -> dict[str, Any]:
    templates = by_name(objects, "ConfigMap", "recflow-spark-templates")["data"]
    return yaml.safe_load(templates["executor.yaml"])


def test_spark_executors_get_a_pod_template_the_namespace_admits(
    objects: list[dict[str, Any]], schemas: Path, tmp_path: Path
) -> None:
    connect = next(containers(by_name(objects, "Deployment", "recflow-spark-connect")))
    (mount,) = [m for m in connect["volumeMounts"] if m["name"] == "templates"]
    assert (
        f"spark.kubernetes.executor.podTemplateFile={mount['mountPath']}/executor.yaml"
        in (connect["args"])
    )
    pod = executor_template(objects)
    (tmp_path / "executor.yaml").write_text(yaml.safe_dump(pod))
    done = kubeconform(schemas, tmp_path / "executor.yaml")
    assert done.returncode == 0, done.stdout
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (executor,) = spec["containers"]
    assert executor["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert executor["securityContext"]["allowPrivilegeEscalation"] is False
    # The driver's NetworkPolicy lets exactly these pods call it back.
    policy = by_name(objects, "NetworkPolicy", "recflow-spark-connect")
    allowed = [
        rule["from"][0]["podSelector"].get("matchLabels", {}) for rule in policy["spec"]["ingress"]
    ]
    assert any(a and a.items() <= pod["metadata"]["labels"].items() for a in allowed)
