"""Cross-reference and hardening checks over a rendered deployment (a list of objects).

Each check returns a list of problems ("" when all is well), so a test shows all of them at
once and a test that breaks a manifest on purpose can assert that the right one appears.
Objects made outside the build are modelled explicitly: the Services KubeRay creates for a
RayService, and the pods of the Dagster Helm release.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

Doc = dict[str, Any]

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "RayService")
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet", "RayService")
# Pods of the Dagster Helm release `dagster` (chart pods and the run/step Jobs it launches).
DAGSTER_RELEASE_PODS = [
    {"app.kubernetes.io/instance": "dagster", "component": "dagster-webserver"},
    {"app.kubernetes.io/instance": "dagster", "component": "dagster-daemon"},
    {"app.kubernetes.io/instance": "dagster", "component": "user-deployments",
     "deployment": "pipelines"},
    {"app.kubernetes.io/instance": "dagster", "app.kubernetes.io/component": "run_worker"},
    {"app.kubernetes.io/instance": "dagster", "app.kubernetes.io/component": "step_worker"},
]


def name_of(doc: Doc) -> str:
    return doc["metadata"]["name"]


def pod_templates(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, pod template) of a workload."""
    kind, spec = doc["kind"], doc.get("spec", {})
    where = f"{kind}/{name_of(doc)}"
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield where, spec["template"]
    elif kind == "CronJob":
        yield where, spec["jobTemplate"]["spec"]["template"]
    elif kind == "RayService":
        cluster = spec["rayClusterConfig"]
        yield f"{where}/head", cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{where}/{group['groupName']}", group["template"]


def all_pod_templates(docs: Iterable[Doc]) -> list[tuple[str, Doc, Doc]]:
    return [(where, tpl, doc) for doc in docs for where, tpl in pod_templates(doc)]


def pod_label_sets(docs: Iterable[Doc], include_external: bool = True) -> list[dict[str, str]]:
    labels = [tpl.get("metadata", {}).get("labels", {}) for _, tpl, _ in all_pod_templates(docs)]
    return labels + (DAGSTER_RELEASE_PODS if include_external else [])


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Label-selector semantics (matchLabels / matchExpressions, or a plain map)."""
    match = selector.get("matchLabels", {}) if "matchLabels" in selector or (
        "matchExpressions" in selector) else selector
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def containers(tpl: Doc, init: bool = True) -> list[Doc]:
    spec = tpl.get("spec", {})
    return [*spec.get("containers", []), *(spec.get("initContainers", []) if init else [])]


def services(docs: Iterable[Doc]) -> dict[str, list[Doc]]:
    """Service name -> its ports, including the Services KubeRay creates for a RayService."""
    out = {name_of(d): d["spec"].get("ports", []) for d in docs if d["kind"] == "Service"}
    for ray in (d for d in docs if d["kind"] == "RayService"):
        out[f"{name_of(ray)}-serve-svc"] = [{"name": "serve", "port": 8000}]
        out[f"{name_of(ray)}-head-svc"] = [
            {"name": n, "port": p} for n, p in
            (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("serve", 8000))
        ]
    return out


# --- references ---------------------------------------------------------------------------

def _names(docs: Iterable[Doc], kind: str) -> dict[str, Doc]:
    return {name_of(d): d for d in docs if d["kind"] == kind}


def dangling_references(docs: list[Doc]) -> list[str]:
    """ConfigMaps, Secrets (and their keys), ServiceAccounts and volumes that pods name."""
    config_maps, secrets = _names(docs, "ConfigMap"), _names(docs, "Secret")
    accounts = _names(docs, "ServiceAccount")
    problems = []

    def need(kind: str, store: dict[str, Doc], name: str, key: str | None, where: str) -> None:
        if name not in store:
            problems.append(f"{where}: {kind} {name!r} does not exist")
        elif key is not None:
            data = {**store[name].get("data", {}), **store[name].get("stringData", {})}
            if key not in data:
                problems.append(f"{where}: {kind} {name!r} has no key {key!r}")

    for where, tpl, doc in all_pod_templates(docs):
        spec = tpl.get("spec", {})
        if spec.get("serviceAccountName") and spec["serviceAccountName"] not in accounts:
            problems.append(f"{where}: ServiceAccount {spec['serviceAccountName']!r} missing")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claim_templates = {t["metadata"]["name"] for t in
                           doc.get("spec", {}).get("volumeClaimTemplates", [])}
        for vol in volumes.values():
            if "configMap" in vol:
                for item in vol["configMap"].get("items", []) or [{}]:
                    need("ConfigMap", config_maps, vol["configMap"]["name"], item.get("key"),
                         where)
            if "secret" in vol:
                for item in vol["secret"].get("items", []) or [{}]:
                    need("Secret", secrets, vol["secret"]["secretName"], item.get("key"), where)
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                if claim not in _names(docs, "PersistentVolumeClaim"):
                    problems.append(f"{where}: PersistentVolumeClaim {claim!r} missing")
        for c in containers(tpl):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    need("ConfigMap", config_maps, source["configMapRef"]["name"], None, where)
                if "secretRef" in source:
                    need("Secret", secrets, source["secretRef"]["name"], None, where)
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    need("ConfigMap", config_maps, r["name"], r["key"], where)
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    need("Secret", secrets, r["name"], r["key"], where)
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in claim_templates:
                    problems.append(f"{where}/{c['name']}: volume {mount['name']!r} missing")
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if target["name"] not in _names(docs, target["kind"]):
            problems.append(f"HPA/{name_of(hpa)}: {target['kind']}/{target['name']} missing")
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        if sts["spec"]["serviceName"] not in _names(docs, "Service"):
            problems.append(f"StatefulSet/{name_of(sts)}: Service {sts['spec']['serviceName']!r}"
                            " missing")
    return problems


def selector_problems(docs: list[Doc]) -> list[str]:
    """Selectors that select nothing: Services, workloads, PDBs, network and mesh policies,
    monitors."""
    problems = []
    labels = pod_label_sets(docs)
    ours = pod_label_sets(docs, include_external=False)
    for doc in docs:
        kind, spec, where = doc["kind"], doc.get("spec", {}), f"{doc['kind']}/{name_of(doc)}"
        if kind == "Service" and spec.get("selector"):
            if not any(selects(spec["selector"], lbl) for lbl in ours):
                problems.append(f"{where}: selector {spec['selector']} matches no pod")
        elif kind in ("Deployment", "StatefulSet", "DaemonSet"):
            tpl_labels = spec["template"].get("metadata", {}).get("labels", {})
            if not selects(spec["selector"], tpl_labels):
                problems.append(f"{where}: selector does not match its own pod template")
        elif kind == "PodDisruptionBudget" and not any(
            selects(spec["selector"], lbl) for lbl in labels
        ):
            problems.append(f"{where}: selector matches no pod")
        elif kind == "NetworkPolicy":
            selectors = [spec["podSelector"]] + [
                peer["podSelector"]
                for rule in spec.get("ingress", []) + spec.get("egress", [])
                for peer in rule.get("from", []) + rule.get("to", [])
                if "podSelector" in peer and "namespaceSelector" not in peer
            ]
            for sel in selectors:
                if sel and not any(selects(sel, lbl) for lbl in labels):
                    problems.append(f"{where}: pod selector {sel} matches no pod")
        elif kind in ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication"):
            sel = spec.get("selector", {}).get("matchLabels")
            if sel and not any(selects(sel, lbl) for lbl in ours):
                problems.append(f"{where}: selector {sel} matches no pod")
        elif kind == "EnvoyFilter":
            sel = spec.get("workloadSelector", {}).get("labels")
            if sel and not any(selects(sel, lbl) for lbl in ours):
                problems.append(f"{where}: workloadSelector {sel} matches no pod")
        elif kind == "PodMonitor":
            matched = [tpl for _, tpl, _ in all_pod_templates(docs)
                       if selects(spec["selector"], tpl.get("metadata", {}).get("labels", {}))]
            if not matched:
                problems.append(f"{where}: selector matches no pod")
            port_names = {p.get("name") for tpl in matched for c in containers(tpl, init=False)
                          for p in c.get("ports", [])}
            for endpoint in spec.get("podMetricsEndpoints", []):
                if "port" in endpoint and endpoint["port"] not in port_names:
                    problems.append(f"{where}: no pod has a port named {endpoint['port']!r}")
        elif kind == "ServiceMonitor":
            matched = [d for d in docs if d["kind"] == "Service"
                       and selects(spec["selector"], d["metadata"].get("labels", {}))]
            if not matched:
                problems.append(f"{where}: selector matches no Service")
            port_names = {p.get("name") for s in matched for p in s["spec"]["ports"]}
            for endpoint in spec.get("endpoints", []):
                if "port" in endpoint and endpoint["port"] not in port_names:
                    problems.append(f"{where}: no Service port named {endpoint['port']!r}")
    return problems


def port_problems(docs: list[Doc]) -> list[str]:
    """Every Service's targetPort is a port of the pods it selects."""
    problems = []
    templates = all_pod_templates(docs)
    for svc in (d for d in docs if d["kind"] == "Service" and d["spec"].get("selector")):
        pods = [tpl for _, tpl, _ in templates
                if selects(svc["spec"]["selector"], tpl.get("metadata", {}).get("labels", {}))]
        declared = [p for tpl in pods for c in containers(tpl, init=False)
                    for p in c.get("ports", [])]
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            found = any(
                p.get("name") == target if isinstance(target, str) else p["containerPort"] == target
                for p in declared
            )
            if pods and not found:
                problems.append(f"Service/{name_of(svc)}: targetPort {target!r} is no port of "
                                "its pods")
    return problems


def _host_service(host: str) -> str | None:
    """`name`, `name.ns`, `name.ns.svc.cluster.local` -> name (None for outside hosts)."""
    parts = host.split(".")
    if len(parts) == 1 or parts[2:] in ([], ["svc"], ["svc", "cluster", "local"]):
        return parts[0]
    return None


def mesh_host_problems(docs: list[Doc], namespace: str) -> list[str]:
    """VirtualService and DestinationRule hosts are Services of the build (or of KubeRay),
    in the namespace, with the ports named; VirtualService gateways exist."""
    problems = []
    svc_ports = services(docs)
    gateways = _names(docs, "Gateway")

    def check(where: str, host: str, port: int | None = None) -> None:
        parts = host.split(".")
        name = _host_service(host)
        if name is None or (len(parts) > 1 and parts[1] != namespace):
            problems.append(f"{where}: host {host!r} is not a Service of {namespace}")
        elif name not in svc_ports:
            problems.append(f"{where}: host {host!r}: Service {name!r} does not exist")
        elif port is not None and port not in {p["port"] for p in svc_ports[name]}:
            problems.append(f"{where}: Service {name!r} has no port {port}")

    for vs in (d for d in docs if d["kind"] == "VirtualService"):
        where = f"VirtualService/{name_of(vs)}"
        for gw in vs["spec"].get("gateways", []):
            if gw != "mesh" and gw.split("/")[-1] not in gateways:
                problems.append(f"{where}: Gateway {gw!r} does not exist")
        for route in vs["spec"].get("http", []) + vs["spec"].get("tcp", []):
            for dest in route.get("route", []):
                d = dest["destination"]
                check(where, d["host"], d.get("port", {}).get("number"))
    for dr in (d for d in docs if d["kind"] == "DestinationRule"):
        check(f"DestinationRule/{name_of(dr)}", dr["spec"]["host"])
    return problems


# --- hardening ----------------------------------------------------------------------------

def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def hardening_problems(docs: list[Doc]) -> list[str]:
    """Resources, probes (long-running containers), non-root, no privilege escalation,
    dropped capabilities and pinned images on every container of every pod template."""
    problems = []
    for where, tpl, doc in all_pod_templates(docs):
        pod_sc = tpl.get("spec", {}).get("securityContext", {})
        init_names = {c["name"] for c in tpl.get("spec", {}).get("initContainers", [])}
        for c in containers(tpl):
            at = f"{where}/{c['name']}"
            sc = c.get("securityContext", {})
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(part, {}))
                if missing:
                    problems.append(f"{at}: no {part} for {sorted(missing)}")
            long_running = doc["kind"] in LONG_RUNNING and c["name"] not in init_names
            if long_running:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        problems.append(f"{at}: no {probe}")
            if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
                    and sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0):
                problems.append(f"{at}: may run as root")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{at}: capabilities not dropped")
            if sc.get("privileged"):
                problems.append(f"{at}: privileged")
            if not _image_pinned(c.get("image", "")):
                problems.append(f"{at}: image {c.get('image')!r} is not pinned")
    for ray in (d for d in docs if d["kind"] == "RayService"):
        options = ray["spec"]["rayClusterConfig"].get("autoscalerOptions", {})
        if ray["spec"]["rayClusterConfig"].get("enableInTreeAutoscaling") and not (
            options.get("resources") and options.get("securityContext", {}).get("runAsNonRoot")
        ):
            problems.append(f"RayService/{name_of(ray)}: autoscaler sidecar lacks resources "
                            "or a non-root securityContext")
    return problems


def env_names(docs: list[Doc], config_map: str) -> set[str]:
    return set(_names(docs, "ConfigMap")[config_map].get("data", {}))
