#!/usr/bin/env python3
"""Checks charts/hemostat offline: lint, render every value set in charts/hemostat/ci/, validate
what renders with `kubernetes-validate --strict`, the PrometheusRule with `promtool check rules`
(and its metric names against src/metrics.rs), the policies with `hemostat validate`, and that
values.schema.json refuses bad values.

    python3 scripts/check-chart.py [--hemostat PATH]     (default: $HEMOSTAT_BIN, else target/debug/hemostat)
    python3 scripts/check-chart.py --metric-names        only: the alert rules use metrics src/metrics.rs registers

Needs `pip install helm-python-sdk==0.2.2 kubernetes-validate check-jsonschema` and Debian's
`prometheus` (promtool); scripts/test.sh installs them. Exits 1 on the first kind of failure,
printing every problem.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "hemostat"

try:
    import helm_python
    import yaml
except ImportError as e:  # a clear message instead of a traceback
    sys.exit(f"check-chart: {e}: run `python3 -m pip install helm-python-sdk==0.2.2 kubernetes-validate check-jsonschema`")

problems = []


def problem(msg):
    problems.append(msg)
    print(f"check-chart: FAIL {msg}", flush=True)


def ok(msg):
    print(f"check-chart: ok   {msg}", flush=True)


def render(values, name="hs", namespace="hemostat"):
    return helm_python.Chart.load(str(CHART)).render(values, name=name, namespace=namespace)


def documents(rendered):
    """Every Kubernetes object rendered, as (template, dict)."""
    out = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((template, doc))
    return out


def registered_metrics():
    """hemostat_* names the binary exposes, from the registrations in src/metrics.rs (and its submodules)."""
    names = set()
    sources = [ROOT / "src" / "metrics.rs", *sorted((ROOT / "src" / "metrics").glob("*.rs"))]
    text = "\n".join(p.read_text() for p in sources if p.exists())
    for kind, name in re.findall(r"(Counter|Gauge|Histogram|Family)[^\n]*\n?|register(?:_with_unit)?\(\s*\"([a-z_]+)\"", text):
        if name:
            names.add(f"hemostat_{name}")
    # Field types decide the suffixes: counters get _total, histograms _bucket/_sum/_count.
    fields = dict(re.findall(r"^\s+([a-z_]+): (?:Family<[^,]+, )?(Counter|Gauge|Histogram|HistogramFamily)", text, re.M))
    exposed = set()
    for n in names:
        base = n[len("hemostat_"):]
        kind = fields.get(base) or fields.get(base.removesuffix("_duration") + "_duration")
        if kind == "Counter":
            exposed.add(n + "_total")
        elif kind in ("Histogram", "HistogramFamily"):
            exposed.update({n + "_seconds_bucket", n + "_seconds_sum", n + "_seconds_count"})
        exposed.add(n)
    return exposed


METRIC_NAMES_ONLY = "--metric-names" in sys.argv


def check_metric_names(doc, label):
    known = registered_metrics()
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            for metric in sorted(set(re.findall(r"\bhemostat_[a-z_]+", rule["expr"]))):
                if metric not in known:
                    problem(f"{label}: alert {rule['alert']} uses {metric}, which src/metrics.rs does not register")
                else:
                    ok(f"{label}: alert {rule['alert']} uses {metric}, registered in src/metrics.rs")


def check_prometheus_rule(doc, work, label):
    rules_file = work / f"{label}-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    r = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"{label}: promtool check rules: {r.stdout}{r.stderr}")
    else:
        ok(f"{label}: promtool check rules ({sum(len(g['rules']) for g in doc['spec']['groups'])} rules)")
    alerts = {rule["alert"] for group in doc["spec"]["groups"] for rule in group["rules"]}
    want = {"HemoStatRepairsFailing", "HemoStatCircuitBreakerOpen", "HemoStatRedisOutage", "HemoStatOutboxDropping"}
    if want - alerts:
        problem(f"{label}: PrometheusRule lacks {sorted(want - alerts)}")


def check_policies(doc, work, label, hemostat):
    pdir = work / f"{label}-policies"
    pdir.mkdir()
    for file, text in doc.get("data", {}).items():
        (pdir / file).write_text(text)
    r = subprocess.run([hemostat, "validate", str(pdir)], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"{label}: the chart's policies fail `hemostat validate`: {r.stdout}{r.stderr}")
    else:
        ok(f"{label}: {len(doc.get('data', {}))} policies pass `hemostat validate`")


def env_of(docs):
    ds = [d for _, d in docs if d["kind"] == "DaemonSet"]
    assert len(ds) == 1, "exactly one DaemonSet"
    c = ds[0]["spec"]["template"]["spec"]["containers"][0]
    return ds[0], {e["name"]: e for e in c["env"]}


# What each value set must produce, beyond validating: (kinds present, kinds absent, env checks).
EXPECT = {
    "default-values.yaml": dict(
        present={"DaemonSet", "Service", "ServiceAccount", "StatefulSet", "Secret"},
        absent={"ConfigMap", "ServiceMonitor", "PrometheusRule"},
        env={"REDIS_URL": "redis://hs-hemostat-redis.hemostat.svc:6379/0"},
        no_env={"HEMOSTAT_POLICIES", "RESPONDER_DRY_RUN"},
    ),
    "external-redis-values.yaml": dict(
        present={"DaemonSet", "ConfigMap", "ServiceMonitor", "PrometheusRule"},
        absent={"StatefulSet", "Secret"},  # both secrets exist already
        env={"REDIS_URL": "rediss://redis.platform.svc:6380/2", "RESPONDER_DRY_RUN": "true",
             "HEMOSTAT_POLICIES": "/etc/hemostat/policies", "HEMOSTAT_ACCEPT_EXTERNAL_REQUESTS": "true"},
        no_env=set(),
    ),
    "configmap-no-redis-values.yaml": dict(
        present={"DaemonSet", "Service", "Secret"},  # the generated API token
        absent={"StatefulSet", "ConfigMap"},
        env={"HEMOSTAT_POLICIES": "/etc/hemostat/policies", "HEMOSTAT_LABEL_FILTER": "io.hemostat.enable=true"},
        no_env={"REDIS_URL", "REDIS_PASSWORD"},
    ),
    "bundled-ephemeral-values.yaml": dict(
        present={"StatefulSet", "ServiceMonitor", "PrometheusRule", "Secret"},
        absent=set(),
        env={"REDIS_URL": "redis://hemostat-redis.hemostat.svc:6379/0"},
        no_env=set(),
    ),
}


def check_value_set(path, work, hemostat):
    label = path.stem
    values = yaml.safe_load(path.read_text()) or {}
    try:
        docs = documents(render(values))
    except helm_python.HelmError as e:
        problem(f"{label}: does not render: {e}")
        return
    kinds = {d["kind"] for _, d in docs}
    expect = EXPECT.get(path.name)
    if expect is None:
        problem(f"{label}: no expectations in scripts/check-chart.py for {path.name}")
        return
    if expect["present"] - kinds:
        problem(f"{label}: missing {sorted(expect['present'] - kinds)} (rendered {sorted(kinds)})")
    if expect["absent"] & kinds:
        problem(f"{label}: should not render {sorted(expect['absent'] & kinds)}")
    ds, env = env_of(docs)
    for name, value in expect["env"].items():
        if env.get(name, {}).get("value") != value:
            problem(f"{label}: env {name} is {env.get(name)!r}, want {value!r}")
    for name in expect["no_env"]:
        if name in env:
            problem(f"{label}: env {name} should not be set")
    token = env.get("HEMOSTAT_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    secrets = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Secret"}
    want_secret = values.get("api", {}).get("token", {}).get("existingSecret")
    if not token or (want_secret and token.get("name") != want_secret) or (not want_secret and token.get("name") not in secrets):
        problem(f"{label}: HEMOSTAT_API_TOKEN must come from the token Secret: {token} (secrets rendered: {secrets})")
    node = env["HEMOSTAT_NODE_NAME"].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if node != "spec.nodeName":
        problem(f"{label}: HEMOSTAT_NODE_NAME must come from the downward API spec.nodeName, got {node!r}")
    pod = ds["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    if not (sc.get("readOnlyRootFilesystem") and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        problem(f"{label}: the operator must run with a read-only root filesystem and no capabilities: {sc}")
    paths = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    if paths.get("docker-socket") != "/var/run/docker.sock" or paths.get("cgroup") != "/sys/fs/cgroup":
        problem(f"{label}: hostPath volumes for the Docker socket and cgroup tree are wrong: {paths}")

    manifests = work / label
    manifests.mkdir()
    n = 0
    for i, (template, doc) in enumerate(docs):
        if doc["kind"] == "PrometheusRule":
            check_prometheus_rule(doc, work, label)
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-policies"):
            check_policies(doc, work, label, hemostat)
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no schema offline for the Prometheus Operator's CRDs (checked above)
        (manifests / f"{i:02d}-{doc['kind']}.yaml").write_text(yaml.safe_dump(doc))
        n += 1
    r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *sorted(map(str, manifests.iterdir()))],
                       capture_output=True, text=True)
    if r.returncode != 0 or "ERROR" in r.stdout or "INVALID" in r.stdout:
        problem(f"{label}: kubernetes-validate --strict: {r.stdout}{r.stderr}")
    else:
        ok(f"{label}: {n} objects pass kubernetes-validate --strict ({', '.join(sorted(kinds))})")


# Values the chart must refuse, and a word the refusal must contain.
BAD_VALUES = [
    ({"replicas": 3}, "replicas"),
    ({"image": {"repository": "hemostat", "tag": 5}}, "tag"),
    ({"image": {"repository": "hemostat", "digest": "sha256:0"}}, "digest"),
    ({"redis": {"enabled": "yes"}}, "enabled"),
    ({"redis": {"url": "http://redis:6379"}}, "url"),
    ({"redis": {"auth": {"password": "hunter2"}}}, "password"),
    ({"operator": {"dryRun": "true"}}, "dryRun"),
    ({"operator": {"sampleInterval": "10 seconds"}}, "sampleInterval"),
    ({"operator": {"outboxCapacity": 0}}, "outboxCapacity"),
    ({"service": {"port": "http"}}, "port"),
    ({"tolerations": {"key": "x"}}, "tolerations"),
    ({"nodeSelector": {"disk": 1}}, "disk"),
    ({"policies": {"web.yaml": "kind: HealthPolicy"}}, "web.yaml"),
    ({"policies": {"web.json": {"apiVersion": "hemostat.io/v1alpha1", "kind": "HealthPolicy", "metadata": {}, "spec": {}}}}, "web.json"),
    ({"state": {"type": "pvc"}}, "type"),
    ({"api": {"token": "plain-text-token"}}, "token"),
    # combinations the templates refuse (accepted and then ignored otherwise)
    ({"redis": {"enabled": True, "url": "redis://elsewhere:6379"}}, "redis.enabled=false"),
    ({"redis": {"enabled": False}, "operator": {"acceptExternalRequests": True}}, "needs Redis"),
    ({"existingPoliciesConfigMap": "x", "policies": {"a.yaml": {"apiVersion": "hemostat.io/v1alpha1", "kind": "HealthPolicy", "metadata": {}, "spec": {}}}}, "not both"),
]


def check_bad_values():
    for values, word in BAD_VALUES:
        try:
            render(values)
        except helm_python.HelmError as e:
            if word not in str(e):
                problem(f"bad values {values} refused, but the message does not name {word!r}: {e}")
            else:
                ok(f"refused {values}: {str(e).splitlines()[-1][:140]}")
            continue
        problem(f"bad values {values} were accepted")


def check_lint():
    for values_file in [None, *sorted((CHART / "ci").glob("*.yaml"))]:
        values = yaml.safe_load(values_file.read_text()) if values_file else None
        report = helm_python.lint(str(CHART), values or None, strict=True, namespace="hemostat")
        errors = report.get("errors") or []
        messages = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
        label = values_file.name if values_file else "chart defaults"
        if errors or messages:
            problem(f"helm lint --strict ({label}): {errors} {messages}")
        else:
            ok(f"helm lint --strict ({label})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric-names", action="store_true", help="only check the alert rules' metric names")
    parser.add_argument("--hemostat", default=os.environ.get("HEMOSTAT_BIN", str(ROOT / "target" / "debug" / "hemostat")))
    args = parser.parse_args()
    if not pathlib.Path(args.hemostat).exists():
        sys.exit(f"check-chart: {args.hemostat} does not exist: build it (cargo build) or pass --hemostat")
    for tool in ("kubernetes-validate", "promtool"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            sys.exit(f"check-chart: {tool} is missing: scripts/test.sh installs it (pip kubernetes-validate, apt prometheus)")
    helm_python.disable_logging()
    if METRIC_NAMES_ONLY:
        values = yaml.safe_load((CHART / "ci" / "external-redis-values.yaml").read_text())
        rules = [d for _, d in documents(render(values)) if d["kind"] == "PrometheusRule"]
        if len(rules) != 1:
            sys.exit("check-chart: external-redis-values.yaml renders no PrometheusRule")
        check_metric_names(rules[0], "PrometheusRule")
        if problems:
            sys.exit(f"check-chart: {len(problems)} problem(s)")
        print("check-chart: every metric of the alert rules is registered")
        return
    check_lint()
    value_sets = sorted((CHART / "ci").glob("*.yaml"))
    if len(value_sets) < 3:
        problem(f"only {len(value_sets)} value sets in {CHART / 'ci'}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in value_sets:
            check_value_set(path, pathlib.Path(tmp), args.hemostat)
    check_bad_values()
    if problems:
        print(f"check-chart: {len(problems)} problem(s)", flush=True)
        sys.exit(1)
    print(f"check-chart: chart OK ({len(value_sets)} value sets, {len(BAD_VALUES)} bad value sets refused)")


if __name__ == "__main__":
    main()
