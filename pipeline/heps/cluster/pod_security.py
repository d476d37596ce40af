"""Pod Security Standards "restricted", checked on every pod spec an overlay renders.

The rules are the Kubernetes Pod Security Standards (baseline and restricted, as Pod
Security Admission enforces them at `restricted`), each with a short name. A workload
that needs one relaxed (the node agent reads the host's network counters) declares it
on the object, with a reason a reviewer reads:

    metadata:
      annotations:
        heps.ihep.ac.cn/policy-exception: |
          hostNetwork: reads the node's network counters from the host's /proc/net

One `rule: reason` per line; an unknown rule or an empty reason is itself a problem.
`heps review` lists every exception an overlay declares. The project's rules for the
cluster itself share the mechanism: `kind` (only the kinds the platform lists: no
webhooks, API services or CRDs), `rbac` (bind only roles the overlay defines, no
aggregation, no powerful verbs or resources, no system subjects; pods run as service
accounts the overlay defines), `namespace` (objects only in namespaces the overlay
creates, never a reserved one), `podSecurityAdmission` (a namespace's Pod Security
labels at least the platform's level) and `priority` (no system or default priority).
Images, requests and limits are the project's own rules (heps.cluster.manifests) and
have no exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

EXCEPTION = "heps.ihep.ac.cn/policy-exception"

# Pod Security Standards, https://kubernetes.io/docs/concepts/security/pod-security-standards/
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
# A PersistentVolume's fields other than its source: any other field names the source,
# which must be one the pod volume types allow (csi; a host folder is the hostPath rule).
PV_SETTINGS = frozenset(
    {
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
RULES = {
    "privileged": "privileged containers",
    "hostProcess": "Windows host processes",
    "hostNetwork": "the host's network namespace",
    "hostPID": "the host's process namespace",
    "hostIPC": "the host's IPC namespace",
    "hostPath": "host folders (hostPath volumes, hostPath and local PersistentVolumes)",
    "hostPort": "host ports",
    "volumeTypes": "volume types outside the restricted list, PersistentVolumes on other "
    "sources, claims of volumes the overlay does not define or of other namespaces",
    "capabilities": "capabilities not dropped (ALL) or added beyond NET_BIND_SERVICE",
    "allowPrivilegeEscalation": "privilege escalation (setuid binaries)",
    "runAsNonRoot": "containers that may run as root (runAsNonRoot unset, runAsUser 0)",
    "seccomp": "seccomp profile other than RuntimeDefault or Localhost",
    "appArmor": "AppArmor profile other than RuntimeDefault or Localhost",
    "seLinux": "SELinux type, user or role beyond the container defaults",
    "procMount": "procMount other than Default",
    "sysctls": "sysctls outside the safe set",
    "rbac": "RBAC: roles the overlay does not define, aggregation, powerful verbs or "
    "resources, wildcards, subjects other than service accounts the overlay defines, pods "
    "running as service accounts the overlay does not define",
    "namespace": "objects in a namespace the overlay does not create, or a reserved one",
    "kind": "kinds the platform does not list (webhooks, API services, CRDs, ...)",
    "podSecurityAdmission": "namespace Pod Security labels below the platform's level, or "
    "pinned to a release",
    "priority": "system or cluster-default priority classes, or a positive priority",
    "network": "Services on external IPs, external names, node ports or load balancers, "
    "Ingress annotations outside the platform's list, NetworkPolicies admitting more than "
    "labelled pods of their namespace",
    "placement": "pods bound to a node (nodeName) or placed on, or tolerating, the control plane",
    "secrets": "pods reading Secrets the overlay does not define (the site's: the hub's "
    "OAuth client, cookie and proxy keys)",
    "managed": "objects the cluster's controllers or the site write (kube-root-ca.crt, "
    "service account token Secrets, the hub's Secrets)",
}
POWERFUL_VERBS = frozenset({"*", "escalate", "bind", "impersonate"})
# Resources whose any verb hands out the cluster: credentials, a shell in other pods,
# the kubelet, tokens of any service account, admission and API extension, host files.
POWERFUL_RESOURCES = frozenset(
    {
        "*",
        "secrets",
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "pods/proxy",
        "pods/ephemeralcontainers",
        "services/proxy",
        "nodes/proxy",
        "serviceaccounts/token",
        "certificatesigningrequests/approval",
        "signers",
        "persistentvolumes",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "customresourcedefinitions",
        "apiservices",
    }
)
# What a ClusterRole may write (in every namespace it is bound in): anything else runs
# pods anywhere as any service account, edits other namespaces' settings, or nodes.
CLUSTER_WRITABLE = frozenset({"events", "pods/binding", "bindings"})
WRITE_VERBS = frozenset({"*", "create", "update", "patch", "delete", "deletecollection"})
# Roles and bindings the cluster owns: the overlay may neither define nor bind them (an
# applied `cluster-admin` of the overlay's would be reconciled back by the API server).
BUILT_IN_ROLES = frozenset({"cluster-admin", "admin", "edit", "view"})
AGGREGATE_LABEL = "rbac.authorization.k8s.io/aggregate-to-"
# The platform's namespace policy: the cluster's own namespaces are never an overlay's.
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
RESERVED_PREFIXES = ("kube-",)
# Pod Security Admission levels, weakest first; the platform's namespace enforces
# baseline (user-init chowns as root) and no label may be weaker than that.
PSA_LEVELS = ("privileged", "baseline", "restricted")
PSA_LEAST = "baseline"
PSA_LABEL = "pod-security.kubernetes.io/"
PSA_VERSION = "latest"
"""The only `enforce-version`: a pinned release checks by that release's rules, which
newer restrictions never reach (`v1.0` is the oldest and weakest)."""
# Ingress annotations the platform's ingress uses: how the proxying behaves. Any other
# (snippets, canary weights taking a host's traffic, mirror targets copying requests with
# their cookies, auth URLs, redirects, certificate issuers) configures the controller.
INGRESS_ANNOTATIONS = frozenset(
    {EXCEPTION}
    | {
        f"nginx.ingress.kubernetes.io/{key}"
        for key in (
            "proxy-read-timeout",
            "proxy-send-timeout",
            "proxy-connect-timeout",
            "proxy-body-size",
            "proxy-http-version",
            "proxy-buffering",
            "proxy-buffer-size",
            "proxy-request-buffering",
            "ssl-redirect",
            "force-ssl-redirect",
        )
    }
)
# Objects the cluster's controllers write: one of the overlay's would replace the CA every
# pod trusts for the API server, or mint a long-lived token of a service account into a
# Secret any pod of the namespace may mount (and act as that account).
MANAGED_CONFIG_MAPS = frozenset({"kube-root-ca.crt"})
# The control plane's node label and taint: no workload of an overlay runs beside the API
# server and etcd (the hub's values refuse a user pod's node selector on it alike).
CONTROL_PLANE = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
# The Secrets the site creates for the platform (README, "Platform secrets"): one of the
# overlay's with their name would replace them at apply (server-side, conflicts forced):
# a cookie secret or OAuth client of the merge request's choosing.
SITE_SECRETS = frozenset({"hub-oauth", "hub-secret", "jupyterhub-tls"})
MINTED_TYPE = "kubernetes.io/service-account-token"
# (API group, kind) an overlay may render: what the platform runs, namespaced, with
# every pod template checked above, and the few cluster-scoped kinds checked here.
# Anything else (admission webhooks, API services, CRDs, storage and runtime classes,
# Endpoints pointing a Service anywhere) needs a declared `kind` exception. Secrets too:
# they are the site's, made outside git; one an overlay renders (a secretGenerator's,
# to whose hashed name kustomize points the hub) would replace the hub's keys.
KINDS = frozenset(
    {
        ("", "ConfigMap"),
        ("", "Namespace"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "ReplicationController"),
        ("", "Service"),
        ("", "ServiceAccount"),
        ("apps", "DaemonSet"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("batch", "CronJob"),
        ("batch", "Job"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("policy", "PodDisruptionBudget"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("scheduling.k8s.io", "PriorityClass"),
    }
)

Finding = tuple[str, str, str]
"""(rule, field path, what is wrong)."""


def exceptions(obj: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The rules an object's annotation relaxes ({rule: reason}) and the problems of the
    annotation itself (unknown rule, no reason)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(EXCEPTION)
    if text is None:
        return {}, []
    declared: dict[str, str] = {}
    problems = []
    for line in str(text).splitlines():
        if not line.strip():
            continue
        rule, _, reason = (part.strip() for part in line.partition(":"))
        if rule not in RULES:
            problems.append(
                f"unknown rule '{rule}'; one of: {', '.join(RULES)} (one 'rule: reason' a line)"
            )
        elif len(reason) < 10:
            problems.append(f"'{rule}' has no reason; say why the workload needs it")
        else:
            declared[rule] = reason
    return declared, problems


def _profile(context: dict[str, Any], key: str) -> str | None:
    value = context.get(key)
    return str(value.get("type")) if isinstance(value, dict) else None


def pod_findings(spec: dict[str, Any], path: str) -> Iterator[Finding]:
    """Every restricted-profile violation of one pod spec (`path` is its field path)."""
    at = f"{path}." if path else ""
    for rule in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(rule) is True:
            yield rule, at + rule, f"{rule}: true shares the host's namespace"
    pod = spec.get("securityContext") or {}
    for index, volume in enumerate(spec.get("volumes") or []):
        if not isinstance(volume, dict):
            continue
        kinds = [k for k in volume if k != "name"]
        field = f"{at}volumes[{index}]"
        if "hostPath" in kinds:
            where = (volume.get("hostPath") or {}).get("path")
            yield "hostPath", f"{field}.hostPath", f"mounts the host folder {where}"
        elif any(k not in VOLUME_TYPES for k in kinds):
            yield "volumeTypes", field, f"volume type {', '.join(kinds)} is not allowed"
    for index, sysctl in enumerate(pod.get("sysctls") or []):
        name = (sysctl or {}).get("name") if isinstance(sysctl, dict) else sysctl
        if name not in SAFE_SYSCTLS:
            yield "sysctls", f"{at}securityContext.sysctls[{index}]", f"sysctl {name} is unsafe"
    yield from _context_findings(pod, f"{at}securityContext")
    pod_non_root = pod.get("runAsNonRoot") is True
    pod_seccomp = _profile(pod, "seccompProfile") in PROFILE_TYPES
    for listed in ("containers", "initContainers", "ephemeralContainers"):
        for index, container in enumerate(spec.get(listed) or []):
            if isinstance(container, dict):
                field = f"{at}{listed}[{index}]"
                yield from _container_findings(container, field, pod_non_root, pod_seccomp)


def _context_findings(context: dict[str, Any], field: str) -> Iterator[Finding]:
    """What pod and container security contexts share: user, seccomp, SELinux, AppArmor,
    Windows host processes."""
    if context.get("runAsUser") == 0:
        yield "runAsNonRoot", f"{field}.runAsUser", "runAsUser: 0 runs as root"
    seccomp = _profile(context, "seccompProfile")
    if seccomp is not None and seccomp not in PROFILE_TYPES:
        yield "seccomp", f"{field}.seccompProfile", f"seccomp profile {seccomp}"
    apparmor = _profile(context, "appArmorProfile")
    if apparmor is not None and apparmor not in PROFILE_TYPES:
        yield "appArmor", f"{field}.appArmorProfile", f"AppArmor profile {apparmor}"
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        yield "seLinux", f"{field}.seLinuxOptions", f"SELinux options {selinux}"
    if (context.get("windowsOptions") or {}).get("hostProcess") is True:
        yield "hostProcess", f"{field}.windowsOptions.hostProcess", "runs as a host process"


def _container_findings(
    container: dict[str, Any], field: str, pod_non_root: bool, pod_seccomp: bool
) -> Iterator[Finding]:
    context = container.get("securityContext") or {}
    at = f"{field}.securityContext"
    if context.get("privileged") is True:
        yield "privileged", f"{at}.privileged", "the container is privileged"
    if context.get("allowPrivilegeEscalation") is not False:
        yield (
            "allowPrivilegeEscalation",
            f"{at}.allowPrivilegeEscalation",
            "must be false",
        )
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        yield "capabilities", f"{at}.capabilities.drop", "must drop ALL"
    added = [c for c in capabilities.get("add") or [] if c != "NET_BIND_SERVICE"]
    if added:
        yield "capabilities", f"{at}.capabilities.add", f"adds {', '.join(map(str, added))}"
    if context.get("runAsNonRoot") is False or not (context.get("runAsNonRoot") or pod_non_root):
        yield "runAsNonRoot", f"{at}.runAsNonRoot", "must be true (here or in the pod)"
    if not (_profile(context, "seccompProfile") in PROFILE_TYPES or pod_seccomp):
        yield (
            "seccomp",
            f"{at}.seccompProfile",
            "must be RuntimeDefault or Localhost (here or in the pod)",
        )
    if context.get("procMount", "Default") != "Default":
        yield "procMount", f"{at}.procMount", f"procMount {context['procMount']}"
    for index, port in enumerate(container.get("ports") or []):
        if isinstance(port, dict) and port.get("hostPort"):
            yield "hostPort", f"{field}.ports[{index}].hostPort", f"host port {port['hostPort']}"
    yield from _context_findings(context, at)


def annotation_findings(meta: dict[str, Any], path: str) -> Iterator[Finding]:
    """AppArmor profiles set by the older annotations of a pod or pod template's
    `metadata` (`path` is the field path of that metadata)."""
    for key, value in (meta.get("annotations") or {}).items():
        apparmor = str(key).startswith("container.apparmor.security.beta.kubernetes.io/")
        if apparmor and value != "runtime/default" and not str(value).startswith("localhost/"):
            yield "appArmor", f"{path}.annotations.{key}", f"AppArmor profile {value}"


@dataclass(frozen=True)
class Defined:
    """What an overlay itself renders: the only namespaces, roles and service accounts
    its objects may use (anything else is the cluster's own)."""

    namespaces: frozenset[str]
    """Rendered as Namespace objects and listed by the platform."""
    listed: frozenset[str]
    """The platform's namespace policy (heps.yaml `reconcile.namespaces`)."""
    roles: frozenset[tuple[str, str, str]]
    """(kind, namespace, name); a ClusterRole's namespace is ''."""
    service_accounts: frozenset[tuple[str, str]]
    """(namespace, name)."""
    volumes: frozenset[str] = frozenset()
    """PersistentVolume names."""
    shared_hosts: frozenset[str] = frozenset()
    """Hosts that more than one Ingress routes."""
    secrets: frozenset[tuple[str, str]] = frozenset()
    """(namespace, name) of the Secrets it renders."""


def reserved(namespace: str) -> bool:
    return namespace in RESERVED_NAMESPACES or namespace.startswith(RESERVED_PREFIXES)


def built_in(name: str) -> bool:
    return name in BUILT_IN_ROLES or name.startswith("system:")


def defined(objs: Iterable[dict[str, Any]], listed: Iterable[str]) -> Defined:
    def where(obj: dict[str, Any]) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", ""))

    objs = list(objs)
    found = [where(obj) for obj in objs]
    allowed = frozenset(n for n in listed if not reserved(n))
    routed = [host for obj in objs if obj.get("kind") == "Ingress" for host in _hosts(obj)]
    return Defined(
        namespaces=frozenset(n for k, _, n in found if k == "Namespace" and n in allowed),
        listed=allowed,
        roles=frozenset(f for f in found if f[0] in ("Role", "ClusterRole") and not built_in(f[2])),
        service_accounts=frozenset((ns, n) for k, ns, n in found if k == "ServiceAccount"),
        volumes=frozenset(n for k, _, n in found if k == "PersistentVolume"),
        shared_hosts=frozenset(h for h in routed if routed.count(h) > 1),
        secrets=frozenset((ns, n) for k, ns, n in found if k == "Secret"),
    )


def _hosts(ingress: dict[str, Any]) -> set[str]:
    """The hosts an Ingress routes (each once)."""
    rules = (ingress.get("spec") or {}).get("rules") or []
    return {str(r.get("host", "")) for r in rules if isinstance(r, dict)}


def cluster_findings(obj: dict[str, Any], overlay: Defined) -> Iterator[Finding]:
    """The project's rules for the cluster itself (a merge request must not grant itself
    the cluster): kind, namespace, Pod Security labels, priority, network and RBAC."""
    kind = str(obj.get("kind", ""))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    if (group, kind) not in KINDS:
        yield "kind", "kind", f"{group or 'core'}/{kind} is not a kind the platform lists"
    if namespace and namespace not in overlay.namespaces:
        yield "namespace", "metadata.namespace", _not_created(namespace, overlay)
    if kind == "Namespace":
        if name not in overlay.listed:
            yield "namespace", "metadata.name", _not_created(name, overlay)
        yield from _admission_findings(meta.get("labels") or {})
    if kind == "PriorityClass":
        if name.startswith("system-"):
            yield "priority", "metadata.name", f"{name}: system- names are the cluster's"
        if obj.get("globalDefault") is True:
            yield "priority", "globalDefault", "would become every pod's priority"
        value = obj.get("value")
        if not isinstance(value, int) or value > 0:
            yield "priority", "value", f"{value!r} outranks user sessions (0); use 0 or less"
    if kind == "Service" and (obj.get("spec") or {}).get("externalIPs"):
        yield "network", "spec.externalIPs", "takes the cluster's traffic to those addresses"
    if kind == "Service" and (obj.get("spec") or {}).get("type") in ("NodePort", "LoadBalancer"):
        yield (
            "network",
            "spec.type",
            f"{obj['spec']['type']}: reachable from outside the cluster, around the ingress "
            "and its TLS",
        )
    if kind == "Service" and (obj.get("spec") or {}).get("type") == "ExternalName":
        yield (
            "network",
            "spec.type",
            "ExternalName: the ingress controller and every pod asking for it are sent "
            "wherever externalName says (another namespace's service, the API server)",
        )
    if kind == "Ingress":
        for key in meta.get("annotations") or {}:
            if key not in INGRESS_ANNOTATIONS:
                yield (
                    "network",
                    f"metadata.annotations.{key}",
                    "configures the ingress controller beyond the platform's annotations "
                    "(proxy timeouts, body size, HTTP version, buffering, TLS redirect)",
                )
    for host in sorted(_hosts(obj) & overlay.shared_hosts if kind == "Ingress" else ()):
        yield (
            "network",
            "spec.rules",
            f"host {host or '(any)'} is routed by another Ingress too: the ingress controller "
            "merges their paths, so one could take the other's (an OAuth callback)",
        )
    if kind == "NetworkPolicy":
        yield from _network_policy_findings(obj.get("spec") or {})
    if kind == "ConfigMap" and name in MANAGED_CONFIG_MAPS:
        yield "managed", "metadata.name", f"{name} is written by the cluster for every namespace"
    if kind == "Secret" and name in SITE_SECRETS:
        yield "managed", "metadata.name", f"{name} is the site's: applying it would replace it"
    if kind == "Secret" and obj.get("type") == MINTED_TYPE:
        yield (
            "managed",
            "type",
            f"{MINTED_TYPE}: the cluster would keep a token of the service account in it, "
            "for any pod of the namespace mounting it to act as that account",
        )
    yield from _rbac_findings(obj, kind, namespace, overlay)


def _network_policy_findings(spec: dict[str, Any]) -> Iterator[Finding]:
    """NetworkPolicies add up (a connection is allowed when any policy allows it), so one
    of the overlay's could open what the base's closes: each may admit only pods of its
    own namespace chosen by their labels (`podSelector.matchLabels`)."""
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for index, rule in enumerate(spec.get(direction) or []):
            field = f"spec.{direction}[{index}].{peers}"
            listed = rule.get(peers) if isinstance(rule, dict) else None
            if not listed or not isinstance(listed, list):
                yield "network", field, "no peers listed: admits every address"
                continue
            for at, peer in enumerate(listed):
                chosen = peer.get("podSelector") if isinstance(peer, dict) else None
                if not (
                    isinstance(chosen, dict)
                    and chosen.get("matchLabels")
                    and set(chosen) == {"matchLabels"}
                    and set(peer) == {"podSelector"}
                ):
                    yield (
                        "network",
                        f"{field}[{at}]",
                        "admits more than pods of this namespace chosen by labels "
                        "(podSelector.matchLabels)",
                    )


def _not_created(namespace: str, overlay: Defined) -> str:
    if reserved(namespace):
        return f"namespace {namespace} is reserved for the cluster: no overlay creates or uses it"
    if namespace not in overlay.listed:
        return (
            f"namespace {namespace} is not one the overlay creates, nor one of the platform's "
            f"(heps.yaml reconcile.namespaces: {', '.join(sorted(overlay.listed))})"
        )
    return f"namespace {namespace} is not one the overlay creates"


def _admission_findings(labels: dict[str, Any]) -> Iterator[Finding]:
    version = labels.get(f"{PSA_LABEL}enforce-version", PSA_VERSION)
    if version != PSA_VERSION:
        yield (
            "podSecurityAdmission",
            f"metadata.labels.{PSA_LABEL}enforce-version",
            f"{version}: checks pods by that release's rules; use {PSA_VERSION} or none",
        )
    for mode in ("enforce", "audit", "warn"):
        key = PSA_LABEL + mode
        level = labels.get(key)
        if level is None and mode != "enforce":
            continue
        if level not in PSA_LEVELS or PSA_LEVELS.index(level) < PSA_LEVELS.index(PSA_LEAST):
            yield (
                "podSecurityAdmission",
                f"metadata.labels.{key}",
                f"{level or 'unset (privileged)'}: below the platform's level {PSA_LEAST}",
            )


def _rbac_findings(
    obj: dict[str, Any], kind: str, namespace: str, overlay: Defined
) -> Iterator[Finding]:
    name = str((obj.get("metadata") or {}).get("name", ""))
    if kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding") and built_in(name):
        yield "rbac", "metadata.name", f"{name} is the cluster's own; name it after the workload"
    if kind in ("Role", "ClusterRole"):
        if "aggregationRule" in obj:
            yield "rbac", "aggregationRule", "aggregates other roles' rules into this one"
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for label in labels:
            if str(label).startswith(AGGREGATE_LABEL):
                yield "rbac", f"metadata.labels.{label}", "adds its rules to a built-in role"
        for index, rule in enumerate(obj.get("rules") or []):
            if isinstance(rule, dict):
                yield from _rule_findings(rule, f"rules[{index}]", kind == "ClusterRole")
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = obj.get("roleRef") or {}
        role_kind, role = str(ref.get("kind", "")), str(ref.get("name", ""))
        scope = namespace if role_kind == "Role" else ""
        if (role_kind, scope, role) not in overlay.roles:
            yield (
                "rbac",
                "roleRef.name",
                f"binds {role_kind} {role}, which the overlay does not define "
                "(built-in and system: roles are the cluster's)",
            )
        for index, subject in enumerate(obj.get("subjects") or []):
            yield from _subject_findings(subject, f"subjects[{index}]", namespace, overlay)


def _subject_findings(
    subject: Any, field: str, namespace: str, overlay: Defined
) -> Iterator[Finding]:
    """A binding grants only service accounts the overlay defines: a user, a group (a
    `system:` one, or the identity provider's) or another namespace's account would get
    the overlay's roles (the hub's creates pods as any account of its namespace)."""
    subject = subject if isinstance(subject, dict) else {}
    kind, name = str(subject.get("kind", "")), str(subject.get("name", ""))
    account = (str(subject.get("namespace") or namespace), name)
    if kind != "ServiceAccount":
        yield (
            "rbac",
            f"{field}.name",
            f"binds the {kind or 'subject'} {name} (not a service account)",
        )
    elif account not in overlay.service_accounts:
        yield (
            "rbac",
            f"{field}.name",
            f"binds service account {'/'.join(account)}, which the overlay does not define",
        )


def _rule_findings(rule: dict[str, Any], field: str, cluster_wide: bool) -> Iterator[Finding]:
    listed = set(map(str, rule.get("verbs") or []))
    verbs = POWERFUL_VERBS & listed
    if verbs:
        yield "rbac", f"{field}.verbs", f"grants verbs {sorted(verbs)}"
    resources = [str(r) for r in rule.get("resources") or []]
    powerful = [r for r in resources if r in POWERFUL_RESOURCES or "*" in r]
    if powerful:
        yield "rbac", f"{field}.resources", f"grants {', '.join(powerful)}"
    written = [r for r in resources if r not in CLUSTER_WRITABLE and r not in powerful]
    if cluster_wide and WRITE_VERBS & listed and written:
        yield "rbac", f"{field}.resources", f"writes {', '.join(written)} in every namespace"
    if any("*" in str(u) for u in rule.get("nonResourceURLs") or []):
        yield "rbac", f"{field}.nonResourceURLs", "grants every non-resource URL (*)"


def identity_findings(
    spec: dict[str, Any], path: str, namespace: str, overlay: Defined
) -> Iterator[Finding]:
    """A pod runs as a service account the overlay defines (or the namespace's default):
    any other carries the cluster's own permissions. It reads only Secrets the overlay
    defines: any pod of a namespace may mount any of its Secrets, the site's included."""
    at = f"{path}.".lstrip(".")
    if spec.get("nodeName"):
        yield "placement", f"{at}nodeName", "binds the pod to a node, past the scheduler and taints"
    selector = spec.get("nodeSelector")
    for key in selector if isinstance(selector, dict) else ():
        if key in CONTROL_PLANE:
            yield "placement", f"{at}nodeSelector", f"{key}: places the pod on the control plane"
    for index, toleration in enumerate(spec.get("tolerations") or []):
        key = toleration.get("key") if isinstance(toleration, dict) else None
        if key in CONTROL_PLANE or (isinstance(toleration, dict) and not key):
            yield (
                "placement",
                f"{at}tolerations[{index}]",
                "tolerates the control plane's taint (a toleration without a key tolerates all)",
            )
    for field, name in _secret_references(spec, at):
        if name is not None and (namespace, str(name)) not in overlay.secrets:
            yield "secrets", field, f"reads the Secret {name}, which the overlay does not define"
    for field in ("serviceAccountName", "serviceAccount"):
        account = spec.get(field)
        if account not in (None, "", "default") and (namespace, account) not in (
            overlay.service_accounts
        ):
            yield (
                "rbac",
                f"{path}.{field}".lstrip("."),
                f"runs as service account {account}, which the overlay does not define",
            )


def _secret_references(spec: dict[str, Any], at: str) -> Iterator[tuple[str, Any]]:
    """(field, Secret name or None) of every place a pod spec names a Secret: volumes
    (also projected and a CSI driver's), environment variables and envFrom of every
    container."""

    def dicts(value: Any) -> list[dict[str, Any]]:
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    def name(value: Any, key: str) -> Any:
        return value.get(key) if isinstance(value, dict) else None

    for i, volume in enumerate(dicts(spec.get("volumes"))):
        field = f"{at}volumes[{i}]"
        yield f"{field}.secret", name(volume.get("secret"), "secretName")
        yield f"{field}.csi", name(name(volume.get("csi"), "nodePublishSecretRef"), "name")
        for j, source in enumerate(dicts(name(volume.get("projected"), "sources"))):
            yield f"{field}.projected.sources[{j}]", name(source.get("secret"), "name")
    for listed in ("containers", "initContainers", "ephemeralContainers"):
        for i, container in enumerate(dicts(spec.get(listed))):
            field = f"{at}{listed}[{i}]"
            for j, env in enumerate(dicts(container.get("env"))):
                ref = name(env.get("valueFrom"), "secretKeyRef")
                yield f"{field}.env[{j}]", name(ref, "name")
            for j, source in enumerate(dicts(container.get("envFrom"))):
                yield f"{field}.envFrom[{j}]", name(source.get("secretRef"), "name")


def volume_findings(obj: dict[str, Any], overlay: Defined) -> Iterator[Finding]:
    """A PersistentVolume gives any pod that claims it its source's files: a host folder
    (hostPath rule) or a source outside the pod volume types (an NFS export, iSCSI,
    Ceph, a FlexVolume driver: volumeTypes). A claim may bind only a volume the overlay
    defines, and clone only from its own namespace."""
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        return
    if obj.get("kind") == "PersistentVolume":
        for kind in sorted(k for k in spec if k not in PV_SETTINGS):
            if kind in ("hostPath", "local"):
                where = (spec[kind] or {}).get("path") if isinstance(spec[kind], dict) else None
                yield "hostPath", f"spec.{kind}", f"a PersistentVolume on the host folder {where}"
            elif kind not in VOLUME_TYPES:
                yield "volumeTypes", f"spec.{kind}", f"a PersistentVolume on {kind}"
    if obj.get("kind") == "PersistentVolumeClaim":
        volume = spec.get("volumeName")
        if volume and volume not in overlay.volumes:
            yield (
                "volumeTypes",
                "spec.volumeName",
                f"claims the volume {volume}, which the overlay does not define",
            )
        source = spec.get("dataSourceRef") or {}
        if isinstance(source, dict) and source.get("namespace"):
            yield "volumeTypes", "spec.dataSourceRef.namespace", "clones another namespace's data"
