"""Structural checks of the deploy files against the code they deploy.

The dashboard and alerts may only query metrics that `TrainerMetrics` exports; compose and
Kubernetes may only set known settings, with valid values; probes, ports, selectors and
commands must agree with each other, with the image and with the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_trainer.cli import build_parser
from stream_trainer.config import load_settings
from stream_trainer.ops import OpsServer, TrainerMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stream-trainer.json"
PROMETHEUS = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
METRIC_NAME = re.compile(r"stream_trainer_[a-z_]+")
INPUT_PARTITIONS = 6

# The settings an env var may name (DESIGN section 6). Hardcoded on purpose for now; to be
# replaced by stream_trainer.config's list so a renamed setting fails here.
KNOWN_SETTINGS = frozenset(
    {
        "BOOTSTRAP_SERVERS",
        "APPLICATION_ID",
        "PROCESSING_GUARANTEE",
        "TOPIC_OBSERVATIONS",
        "TOPIC_FEEDBACK",
        "TOPIC_MODEL_VERSIONS",
        "TOPIC_RULE_VERSIONS",
        "TOPIC_TRAINING_METRICS",
        "TOPIC_DEAD_LETTER",
        "AUTO_OFFSET_RESET",
        "MAX_BATCH_EVENTS",
        "MAX_BATCH_LINGER_MS",
        "WORKER_CONCURRENCY",
        "AR_ORDER",
        "RLS_FORGETTING",
        "TRUST_HALF_LIFE_S",
        "HTTP_PORT",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "MAX_EVENT_BYTES",
        "DEDUPE_WINDOW_S",
    }
)


def _exported() -> set[str]:
    return TrainerMetrics().metric_names()


def _check_settings(env: dict[str, Any], where: str) -> None:
    names = {k.removeprefix("STREAM_TRAINER_") for k in env if k.startswith("STREAM_TRAINER_")}
    assert names <= KNOWN_SETTINGS, f"{where}: unknown settings {sorted(names - KNOWN_SETTINGS)}"
    # Values must also be accepted by the service's own config loader.
    load_settings(None, {k: str(v) for k, v in env.items()})


def _check_cli(argv: list[str], where: str) -> None:
    assert argv[0] == "stream-trainer", where
    build_parser().parse_args(argv[1:])  # exits (SystemExit) on a command the CLI lacks


def _promtool_or_skip(binary: str = "promtool") -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} not on PATH; CI installs Debian's prometheus package")
        pytest.skip(f"{binary} not installed (apt-get install prometheus)")
    return path


# ------------------------------------------------------------------------------ Grafana


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _query_panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_every_panel_has_a_datasource_and_targets() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in datasources["datasources"]}
    panels = _query_panels()
    assert len(panels) >= 12
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] in uids, panel["title"]


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = _exported()
    for panel in _query_panels():
        for target in panel["targets"]:
            used = set(METRIC_NAME.findall(target["expr"]))
            assert used, f"{panel['title']}: queries no stream_trainer metric"
            assert used <= exported, f"{panel['title']}: not exported {used - exported}"


def test_dashboard_covers_the_operational_story() -> None:
    used = {
        name
        for panel in _query_panels()
        for target in panel["targets"]
        for name in METRIC_NAME.findall(target["expr"])
    }
    for family in (
        "events_consumed_total",
        "consumer_lag",
        "batch_events_bucket",
        "batch_duration_seconds_bucket",
        "event_age_seconds_bucket",
        "events_invalid_total",
        "versions_published_total",
        "rule_trust_bucket",
        "forecast_skill_bucket",
        "rules",
        "rebalances_total",
        "state_restore_seconds_bucket",
        "transactions_total",
    ):
        assert f"stream_trainer_{family}" in used


def test_quantiles_aggregate_buckets_by_le() -> None:
    for panel in _query_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            if "histogram_quantile" in expr:
                assert re.search(r"sum by \(le\) \(rate\(stream_trainer_\w+_bucket\[", expr), expr
            if panel["type"] == "heatmap":
                assert target.get("format") == "heatmap", panel["title"]


def test_dashboard_layout_is_sane() -> None:
    dashboard = _dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_dashboard_provider_path_is_where_compose_mounts_it() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/stream-trainer.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts


# --------------------------------------------------------------------------- Prometheus


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alerts_query_only_exported_metrics() -> None:
    exported = _exported()
    expected = {
        "StreamTrainerNotReady",
        "StreamTrainerLagGrowing",
        "StreamTrainerNoVersionsPublished",
        "StreamTrainerInvalidRatioHigh",
    }
    assert expected <= {rule["alert"] for rule in _rules()}
    for rule in _rules():
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used <= exported, f"{rule['alert']}: not exported {used - exported}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


@pytest.mark.parametrize(
    ("config", "target"),
    [("prometheus.yml", "trainer:9400"), ("prometheus.local.yml", "localhost:9400")],
)
def test_scrape_targets(config: str, target: str) -> None:
    data = yaml.safe_load((PROMETHEUS / config).read_text())
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}
    trainer = jobs["stream-trainer"]
    assert trainer["static_configs"][0]["targets"] == [target]
    assert trainer.get("metrics_path", "/metrics") == "/metrics"
    for rule_file in data["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file()


def test_compose_scrape_target_is_the_trainer_service() -> None:
    services = _compose()["services"]
    port = services["trainer"]["environment"]["STREAM_TRAINER_HTTP_PORT"]
    assert "trainer" in services
    assert f"{port}:{port}" in services["trainer"]["ports"]
    assert port == "9400"


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_check_config(config: str) -> None:
    promtool = _promtool_or_skip()
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS / config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_and_test_rules() -> None:
    promtool = _promtool_or_skip()
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------- Docker and compose


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _compose_cli() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        probe = subprocess.run([*argv, "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return argv
    return None


def test_docker_compose_config_when_available() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI; the structural checks below still run")
    result = subprocess.run(
        [*cli, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_compose_dependencies_and_ports() -> None:
    services = _compose()["services"]
    assert {"kafka", "topic-init", "trainer", "demo-producer", "prometheus", "grafana"} <= set(
        services
    )
    host_ports: list[str] = []
    for name, service in services.items():
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), f"{name} depends on an unknown service"
        host_ports += [str(p).split(":")[0] for p in service.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports
    for name in ("trainer", "demo-producer"):
        condition = services[name]["depends_on"]["topic-init"]["condition"]
        assert condition == "service_completed_successfully"


def test_compose_mounts_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (ROOT / host).exists(), f"{name}: {host} missing"


def test_compose_trainer_settings_are_known_and_valid() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        env = service.get("environment", {})
        _check_settings(env, name)
    trainer_env = services["trainer"]["environment"]
    kafka_env = services["kafka"]["environment"]
    # The trainer must dial the listener Kafka advertises on the compose network.
    assert f"PLAINTEXT://{trainer_env['STREAM_TRAINER_BOOTSTRAP_SERVERS']}" in kafka_env[
        "KAFKA_ADVERTISED_LISTENERS"
    ].split(",")
    assert kafka_env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert kafka_env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 1
    assert kafka_env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0


def test_compose_topic_init_matches_the_topics_the_trainer_reads() -> None:
    services = _compose()["services"]
    script = services["topic-init"]["command"][0]
    settings = load_settings(None, {})
    for topic in (settings.topic_observations, settings.topic_feedback):
        assert re.search(rf"{re.escape(topic)}\b.*", script)
    lines = [line for line in script.splitlines() if "--create" in line]
    inputs = next(line for line in lines if "--partitions" in line and "compact" not in line)
    assert f"--partitions {INPUT_PARTITIONS}" in inputs
    assert any("cleanup.policy=compact" in line for line in lines)
    compacted = script.split("cleanup.policy=compact")[0]
    assert settings.topic_model_versions in compacted
    assert settings.topic_rule_versions in compacted


def test_compose_commands_parse_with_the_cli() -> None:
    services = _compose()["services"]
    argv = services["demo-producer"]["command"]
    _check_cli(argv, "demo-producer")
    assert "--produce-only" in argv
    for name in ("trainer", "demo-producer"):
        assert services[name]["build"]["context"] == "."


def _dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _instruction(name: str) -> list[str]:
    return [line[len(name) :].strip() for line in _dockerfile() if line.startswith(name + " ")]


def test_dockerfile_shape() -> None:
    assert _instruction("FROM") == ["python:3.11-slim"]
    (user,) = _instruction("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert _instruction("EXPOSE") == ["9400"]
    (cmd,) = _instruction("CMD")
    _check_cli(json.loads(cmd), "Dockerfile CMD")
    assert any("pip install ." in run for run in _instruction("RUN"))


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for copy in _instruction("COPY"):
        *sources, _dest = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert source not in ignored, f"COPY {source}: excluded by .dockerignore"


def _healthcheck_argv() -> list[str]:
    (healthcheck,) = _instruction("HEALTHCHECK")
    argv: list[str] = json.loads(healthcheck.split("CMD", 1)[1])
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2]
    return [sys.executable, *argv[1:]]


async def test_dockerfile_healthcheck_probes_a_real_server() -> None:
    argv = _healthcheck_argv()

    async def run(port: int) -> int:
        env = {**os.environ, "STREAM_TRAINER_HTTP_PORT": str(port)}
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return await proc.wait()

    async with OpsServer(TrainerMetrics().registry, host="127.0.0.1", port=0) as server:
        port = server.port
        assert await run(port) == 0
    assert await run(port) != 0  # nothing listens any more: the healthcheck must fail


# --------------------------------------------------------------------------- Kubernetes


def _k8s() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc | {"_file": path.name}
    return docs


def _container() -> dict[str, Any]:
    (container,) = _k8s()["Deployment"]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def test_k8s_kinds_and_api_versions() -> None:
    docs = _k8s()
    assert {kind: doc["apiVersion"] for kind, doc in docs.items()} == {
        "Kustomization": "kustomize.config.k8s.io/v1beta1",
        "ConfigMap": "v1",
        "Deployment": "apps/v1",
        "Service": "v1",
        "PodMonitor": "monitoring.coreos.com/v1",
        "ScaledObject": "keda.sh/v1alpha1",
    }
    listed = set(docs["Kustomization"]["resources"])
    assert listed == {doc["_file"] for kind, doc in docs.items() if kind != "Kustomization"}


def test_k8s_selectors_match_the_pods() -> None:
    docs = _k8s()
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        docs["Deployment"]["spec"]["selector"]["matchLabels"],
        docs["Service"]["spec"]["selector"],
        docs["PodMonitor"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector
        assert selector.items() <= pod_labels.items()


def test_k8s_probes_and_ports_agree() -> None:
    docs = _k8s()
    container = _container()
    (port,) = container["ports"]
    assert str(port["containerPort"]) == docs["ConfigMap"]["data"]["STREAM_TRAINER_HTTP_PORT"]
    names = {port["name"], port["containerPort"]}
    probes = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in probes.items():
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] in names
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] in names
    endpoint = docs["PodMonitor"]["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in names
    assert endpoint["path"] == "/metrics"


def test_k8s_deployment_is_production_shaped() -> None:
    docs = _k8s()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = _container()
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    _check_cli(container["args"], "Deployment args")


def test_k8s_configmap_holds_known_valid_settings() -> None:
    _check_settings(_k8s()["ConfigMap"]["data"], "ConfigMap")


def test_k8s_scaledobject_targets_the_group_and_partitions() -> None:
    docs = _k8s()
    config = docs["ConfigMap"]["data"]
    spec = docs["ScaledObject"]["spec"]
    assert spec["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= INPUT_PARTITIONS
    topics = set()
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == config["STREAM_TRAINER_APPLICATION_ID"]
        assert meta["bootstrapServers"] == config["STREAM_TRAINER_BOOTSTRAP_SERVERS"]
        assert all(isinstance(v, str) for v in meta.values())  # KEDA metadata is strings
        topics.add(meta["topic"])
    assert topics == {
        config["STREAM_TRAINER_TOPIC_OBSERVATIONS"],
        config["STREAM_TRAINER_TOPIC_FEEDBACK"],
    }
