"""deploy/k8s without a cluster: every rendered object of the base and the overlays validates against the OpenAPI
schema of the Kubernetes version Terraform deploys (kubernetes-validate, strict); the custom resources that have
no schema there (Prometheus Operator, External Secrets) are checked structurally here; the alert rules and the
autoscaler read only metrics that serving exposes; the selectors, ports and references fit together."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from infra_layout import ENVIRONMENTS, HERE, K8S, REPO, find, one
from kustomize_render import object_key

# Custom resources: kubernetes-validate has no schema for them, so test_custom_resources_are_well_formed does.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ClusterSecretStore", "ExternalSecret"}
SEVERITIES = {"warning", "critical"}
DURATION = re.compile(r"^\d+[smhd]$")


def exposed_series() -> set[str]:
    """The series names serving's Prometheus metrics produce (read from the code, which is not imported)."""
    source = "\n".join(p.read_text() for p in sorted((REPO / "serving").rglob("*.py")))
    series = set()
    for kind, name in re.findall(r'\b(Histogram|Counter|Gauge)\(\s*"(rrg_\w+)"', source):
        if kind == "Histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "Counter":
            base = name.removesuffix("_total")
            series |= {f"{base}_total", f"{base}_created"}
        else:
            series.add(name)
    assert series, "found no Prometheus metric in serving/"
    return series


def series_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(rrg_[a-z0-9_]+)", expr))


@pytest.fixture(scope="module")
def schema_results(infra_venv, rendered, tfvars) -> dict[str, list[dict]]:
    version = tfvars["prod"]["cluster"]["kubernetes_version"]
    assert tfvars["staging"]["cluster"]["kubernetes_version"] == version
    out = {}
    for variant, objects in rendered.items():
        result = subprocess.run([str(infra_venv / "bin" / "python"), str(HERE / "kube_validate.py")],
                                input=json.dumps({"version": f"{version}.0", "objects": objects}),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"kube_validate.py failed: {result.stderr[-2000:]}"
        out[variant] = json.loads(result.stdout)
    return out


def test_every_object_validates_against_the_kubernetes_schema(schema_results):
    for variant, results in schema_results.items():
        invalid = [f"{r['kind']}/{r['name']}: {r['message']}" for r in results if r["status"] == "invalid"]
        assert invalid == [], f"{variant}:\n" + "\n".join(invalid)
        assert {r["kind"] for r in results if r["status"] == "no-schema"} == CUSTOM_KINDS & {r["kind"] for r in results}
        assert sum(r["status"] == "ok" for r in results) >= 10, variant


def test_the_overlays_render_everything(rendered):
    kinds = {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
             "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "ClusterSecretStore"}
    for env in ENVIRONMENTS:
        assert {o["kind"] for o in rendered[env]} == kinds | {"ExternalSecret"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed; "
                    "tests/infra/kustomize_render.py renders the overlays instead")
def test_the_python_renderer_matches_kubectl_kustomize(rendered):
    for env in ENVIRONMENTS:
        out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / env)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        theirs = {object_key(o): o for o in yaml.safe_load_all(out.stdout) if o}
        ours = {object_key(o): o for o in rendered[env]}
        assert ours == theirs, env


def test_custom_resources_are_well_formed(rendered, names):
    for objects in rendered.values():
        services = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in find(objects, "Service")}
        for monitor in find(objects, "ServiceMonitor"):
            assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
            (service,) = [s for (ns, _), s in services.items() if ns == monitor["metadata"]["namespace"]
                          and monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
            port_names = {p["name"] for p in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["port"] in port_names and endpoint["path"] == names["serving"]["metrics_path"]
                assert DURATION.match(endpoint["interval"]) and DURATION.match(endpoint["scrapeTimeout"])
        for rule_set in find(objects, "PrometheusRule"):
            assert rule_set["apiVersion"] == "monitoring.coreos.com/v1"
            for group in rule_set["spec"]["groups"]:
                assert group["name"] and group["rules"]
                for rule in group["rules"]:
                    assert ("alert" in rule) != ("record" in rule), rule
                    assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}, rule
                    assert isinstance(rule["expr"], str) and rule["expr"].count("(") == rule["expr"].count(")")
                    if "alert" in rule:
                        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
                        assert DURATION.match(rule["for"]) and rule["labels"]["severity"] in SEVERITIES
                        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
                    else:
                        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"])  # level:metric:operations
        stores = {o["metadata"]["name"] for o in find(objects, "ClusterSecretStore")}
        for store in find(objects, "ClusterSecretStore"):
            assert store["apiVersion"] == "external-secrets.io/v1"
            aws = store["spec"]["provider"]["aws"]
            assert aws["service"] == "SecretsManager" and aws["region"]
        for secret in find(objects, "ExternalSecret"):
            assert secret["apiVersion"] == "external-secrets.io/v1"
            spec = secret["spec"]
            assert spec["secretStoreRef"]["name"] in stores and DURATION.match(spec["refreshInterval"])
            assert spec["target"]["creationPolicy"] == "Owner"
            assert all(set(d) == {"secretKey", "remoteRef"} and set(d["remoteRef"]) == {"key", "property"}
                       for d in spec["data"])


def test_alerts_and_recording_rules_read_only_metrics_serving_exposes(rendered, names):
    exposed = exposed_series()
    rules = [r for g in one(rendered["prod"], "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    records = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        unknown = series_in(rule["expr"]) - exposed
        assert not unknown, f"{rule.get('alert') or rule.get('record')} reads {unknown}, which serving does not expose"
    p99_alert = next(r for r in rules if r.get("alert") == "RrgReportLatencyP99High")
    assert p99_alert["expr"] == f"{next(iter(records))} > {names['serving']['p99_scale_up_seconds']}"
    recording = next(r for r in rules if "record" in r)
    assert f"{names['serving']['latency_histogram']}_bucket" in recording["expr"]
    assert "histogram_quantile(0.99," in recording["expr"]


def test_route_filters_match_serving_route_templates(rendered):
    """The P99 counts report requests only: the route label regex must match serving's route templates."""
    source = "\n".join(p.read_text() for p in sorted((REPO / "serving").rglob("*.py")))
    templates = set(re.findall(r'"(/api/v1/[^"\s]+)"', source))
    exprs = [r["expr"] for g in one(rendered["prod"], "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    exprs += [r["metricsQuery"] for r in adapter["rules"]["external"]]
    for pattern in {m for e in exprs for m in re.findall(r'route=~"([^"]+)"', e)}:
        matched = {t for t in templates if re.fullmatch(pattern, t)}
        assert "/api/v1/studies/{study_id}/report" in matched, (pattern, sorted(templates))
        assert not any(t.startswith("/api/v1/reports") for t in matched), "reads are not report generation"


def test_the_autoscaler_scales_on_p99_latency_from_the_adapter(rendered, names):
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    exposed = exposed_series()
    external = {r["name"]["as"]: r for r in adapter["rules"]["external"]}
    custom = {r["name"]["as"]: r for r in adapter["rules"]["custom"]}
    for rule in [*external.values(), *custom.values()]:
        assert series_in(rule["seriesQuery"]) <= exposed and series_in(rule["seriesQuery"])
        assert re.search(rule["name"]["matches"], next(iter(series_in(rule["seriesQuery"]))))
    for env in ENVIRONMENTS:
        hpa = one(rendered[env], "HorizontalPodAutoscaler", names["serving"]["name"])
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": names["serving"]["name"]}
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        p99 = next(m["external"] for m in spec["metrics"] if m["type"] == "External")
        assert p99["metric"]["name"] == names["serving"]["p99_metric"] and p99["metric"]["name"] in external
        assert p99["target"] == {"type": "Value", "value": str(names["serving"]["p99_scale_up_seconds"])}
        assert p99["metric"]["selector"]["matchLabels"] == {"service": names["serving"]["name"]}
        for metric in (m["pods"] for m in spec["metrics"] if m["type"] == "Pods"):
            assert metric["metric"]["name"] in custom


def test_selectors_ports_and_references_fit_together(rendered, names):
    for objects in rendered.values():
        deployment = one(objects, "Deployment", names["serving"]["name"])
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port_names = {p["name"] for p in container["ports"]}
        service = one(objects, "Service", names["serving"]["name"])
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
        for kind in ("PodDisruptionBudget",):
            assert one(objects, kind)["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        policy = one(objects, "NetworkPolicy", names["serving"]["name"])
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} <= port_names
        mlflow_rule = next(r for r in policy["spec"]["egress"] if any(
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            == names["namespaces"]["mlflow"] for peer in r["to"]))
        assert [p["port"] for p in mlflow_rule["ports"]] == [names["mlflow"]["port"]]
        serving_namespace = names["namespaces"]["serving"]
        config_maps = {o["metadata"]["name"] for o in find(objects, "ConfigMap", namespace=serving_namespace)}
        assert {e["configMapRef"]["name"] for e in container["envFrom"]} <= config_maps
        assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} <= config_maps
        assert {m["name"] for m in container["volumeMounts"]} == {v["name"] for v in pod["volumes"]}
        assert pod["serviceAccountName"] in {o["metadata"]["name"] for o in find(objects, "ServiceAccount")}
        namespaces = {o["metadata"]["name"] for o in find(objects, "Namespace")}
        assert deployment["metadata"]["namespace"] in namespaces


def test_the_pod_runs_restricted(rendered, names):
    """The namespace enforces the restricted Pod Security Standard; the pod must satisfy it."""
    namespace = one(rendered["prod"], "Namespace", names["namespaces"]["serving"])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = one(rendered["prod"], "Deployment", names["serving"]["name"])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests["memory"] == limits["memory"] and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
