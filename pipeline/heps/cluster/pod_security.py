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
`heps review` lists every exception an overlay declares. Two project rules share
the mechanism: `rbac` (no built-in powerful roles, wildcards, escalate/bind/impersonate
verbs or system groups) and `namespace` (objects only in namespaces the overlay creates).
Images, requests and limits are the project's own rules (heps.cluster.manifests) and
have no exception.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    "volumeTypes": "volume types outside the restricted list",
    "capabilities": "capabilities not dropped (ALL) or added beyond NET_BIND_SERVICE",
    "allowPrivilegeEscalation": "privilege escalation (setuid binaries)",
    "runAsNonRoot": "containers that may run as root (runAsNonRoot unset, runAsUser 0)",
    "seccomp": "seccomp profile other than RuntimeDefault or Localhost",
    "appArmor": "AppArmor profile other than RuntimeDefault or Localhost",
    "seLinux": "SELinux type, user or role beyond the container defaults",
    "procMount": "procMount other than Default",
    "sysctls": "sysctls outside the safe set",
    "rbac": "RBAC: cluster-admin/admin/edit, wildcards, escalate/bind/impersonate, system groups",
    "namespace": "objects in a namespace the overlay does not create",
}
POWERFUL_ROLES = frozenset({"cluster-admin", "admin", "edit"})
POWERFUL_VERBS = frozenset({"*", "escalate", "bind", "impersonate"})

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


def annotation_findings(holder: dict[str, Any]) -> Iterator[Finding]:
    """AppArmor profiles set by the older annotations, on a pod or a pod template."""
    meta = holder.get("metadata") or {}
    for key, value in (meta.get("annotations") or {}).items():
        apparmor = str(key).startswith("container.apparmor.security.beta.kubernetes.io/")
        if apparmor and value != "runtime/default" and not str(value).startswith("localhost/"):
            yield "appArmor", f"metadata.annotations.{key}", f"AppArmor profile {value}"


def rbac_findings(obj: dict[str, Any]) -> Iterator[Finding]:
    """Roles and bindings that hand out more than a workload needs: the project's own
    rule beside Pod Security (a merge request must not grant itself the cluster)."""
    kind = obj.get("kind")
    if kind in ("Role", "ClusterRole"):
        for index, rule in enumerate(obj.get("rules") or []):
            if not isinstance(rule, dict):
                continue
            verbs = POWERFUL_VERBS & set(map(str, rule.get("verbs") or []))
            if verbs or "*" in (rule.get("resources") or []):
                what = f"verbs {sorted(verbs)}" if verbs else "every resource (*)"
                yield "rbac", f"rules[{index}]", f"grants {what}"
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        role = (obj.get("roleRef") or {}).get("name")
        if role in POWERFUL_ROLES:
            yield "rbac", "roleRef.name", f"binds the built-in role {role}"
        for index, subject in enumerate(obj.get("subjects") or []):
            name = str((subject or {}).get("name", "")) if isinstance(subject, dict) else ""
            if name.startswith("system:"):
                yield "rbac", f"subjects[{index}].name", f"binds the group or user {name}"


def volume_findings(obj: dict[str, Any]) -> Iterator[Finding]:
    """A PersistentVolume on a host folder gives any pod that claims it the host's files."""
    if obj.get("kind") != "PersistentVolume":
        return
    spec = obj.get("spec") or {}
    for kind in ("hostPath", "local"):
        if isinstance(spec.get(kind), dict):
            where = spec[kind].get("path")
            yield "hostPath", f"spec.{kind}", f"a PersistentVolume on the host folder {where}"
