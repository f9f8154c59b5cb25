"""deploy/k8s/ (kustomize base + GPU overlay), validated offline: every resource against the Kubernetes
OpenAPI schemas (`kubernetes-validate`, strict: unknown fields are errors), the GPU overlay merged the way
kustomize merges a strategic patch, and the wiring that schemas cannot see (probes on our health services,
a grace period that covers preStop and the drain, selectors that match, only real LORAT_* settings)."""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = "1.33.0"


def base_docs() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / "base" / name).read_text()) if d]
    return docs


def by_kind(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name)
    return found[0]


def _merge_named(base: list[dict], patch: list[dict]) -> list[dict]:
    out = [copy.deepcopy(x) for x in base]
    for item in patch:
        match = [x for x in out if x.get("name") == item.get("name")]
        if match:
            _merge(match[0], item)
        else:
            out.append(copy.deepcopy(item))
    return out


def _merge(base: dict, patch: dict) -> None:
    """Strategic merge as kustomize does it for what our patch uses: maps merge, named lists merge by name."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list) and all(
                isinstance(x, dict) and "name" in x for x in value + base[key]):
            base[key] = _merge_named(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def gpu_deployment() -> dict:
    overlay = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../base"]
    deployment = copy.deepcopy(by_kind(base_docs(), "Deployment"))
    for patch in overlay["patches"]:
        _merge(deployment, yaml.safe_load((K8S / "gpu" / patch["path"]).read_text()))
    return deployment


def test_every_resource_validates_strictly() -> None:
    docs = base_docs()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                         "StatefulSet", "ConfigMap"}
    for doc in [*docs, gpu_deployment()]:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_catches_a_mistake() -> None:
    bad = copy.deepcopy(by_kind(base_docs(), "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSION, strict=True)


def test_wiring() -> None:
    docs = base_docs()
    dep = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert container["readinessProbe"]["grpc"]["service"] == "lorat.v1.Tracker"
    assert container["startupProbe"]["grpc"]["service"] == "lorat.v1.Tracker"
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    config = by_kind(docs, "ConfigMap", "lorat-serve")["data"]
    drain = float(config["LORAT_DRAIN_TIMEOUT_S"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10  # + state writes, lease release
    known = {Settings.env_name(f.name) for f in fields(Settings)}
    env = [e["name"] for e in container["env"]] + [e["name"] for e in gpu_deployment()["spec"]["template"][
        "spec"]["containers"][0]["env"]]
    assert not sorted((set(config) | {e for e in env if e.startswith("LORAT_")}) - known)
    assert "LORAT_INSTANCE_ID" in env and "LORAT_ADVERTISE_ADDRESS" in env  # unique id, reachable address
    for kind in ("Service", "PodDisruptionBudget"):
        doc = by_kind(docs, kind, "lorat-serve")
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    hpa = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert int(config["LORAT_MAX_CONNECTION_AGE_S"]) > 0
    gpu = gpu_deployment()["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "LORAT_DEVICE", "value": "cuda"} in gpu["env"]
    assert gpu["livenessProbe"] == container["livenessProbe"]  # the overlay keeps the base's probes


def test_compose_replicas_profile() -> None:
    """deploy/docker-compose.yml's `replicas` profile: three servers on one Redis, each with its own
    instance id and an address the others can forward to."""
    compose = yaml.safe_load((K8S.parent / "docker-compose.yml").read_text())["services"]
    servers = {name: svc for name, svc in compose.items() if name.startswith("lorat")}
    assert set(servers) == {"lorat", "lorat-2", "lorat-3"}
    assert all(servers[n]["profiles"] == ["replicas"] for n in ("lorat-2", "lorat-3"))
    ids = {svc["environment"]["LORAT_INSTANCE_ID"] for svc in servers.values()}
    assert len(ids) == 3
    for name, svc in servers.items():
        assert svc["environment"]["LORAT_ADVERTISE_ADDRESS"] == f"{name}:50051"
        assert svc["environment"]["LORAT_REDIS_URL"] == servers["lorat"]["environment"]["LORAT_REDIS_URL"]


def test_prometheus_adapter_serves_the_metric_the_hpa_scales_on() -> None:
    """The HPA's per-pod metric exists only through the adapter rule: same name on both sides, and a gauge
    that lorat-serve really exports (a renamed metric would leave the HPA on CPU alone, silently)."""
    from server.metrics import Metrics

    hpa = by_kind(base_docs(), "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]
    served = {r["name"]["as"] for r in rules}
    assert wanted and wanted <= served
    exported = {m.name for m in Metrics().registry.collect() if m.type == "gauge"}
    for rule in rules:
        series = rule["seriesQuery"].split("{", 1)[0]
        assert series in exported, series
