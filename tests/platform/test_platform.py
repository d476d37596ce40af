"""`heps platform up` end to end: the SSO testbed (npm's oidc-provider), the hub with
DockerSpawner behind configurable-http-proxy, user-init and the real CT reconstruction
image on this machine's Docker engine, driven by Debian's Chromium through Playwright.

Tests run in file order on one platform (module fixture); the last one takes it down.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import REPO_ROOT, free_port
from tests.platform.conftest import CHROMIUM, Platform

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LABEL = "heps.ihep.ac.cn/platform"
SHOTS = REPO_ROOT / "reports" / "platform"
"""Screenshots of what the scientist saw, kept with the test output."""
CT = "ct-reconstruction"
CT_VERSION = yaml.safe_load((REPO_ROOT / "app-recipes" / CT / "recipe.yaml").read_text())[
    "version"
]  # the testbed overlay offers it by this tag until a promotion pins a digest
CELL = (
    "import runpy, subprocess\n"
    "runpy.run_path('/opt/heps/smoke/reconstruct_phantom.py', run_name='__main__')\n"
    "print(subprocess.run(['id'], capture_output=True, text=True).stdout)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


def log_in(page: Page, platform: Platform, user: str) -> None:
    """Through the hub's login page and the SSO testbed's form, as a person would."""
    page.goto(f"{platform.url}/hub/home")
    page.click("text=Sign in with IHEP SSO")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", f"{user}-testbed")
    page.click("button[type=submit]")


def spawn(page: Page, platform: Platform, slug: str) -> None:
    page.goto(f"{platform.url}/hub/spawn")
    page.check(f"input[name=profile][value={slug}]")
    page.click("button:has-text('Start')")


def objects(client: docker.DockerClient, name: str) -> list[str]:
    """Everything labelled as platform `name`'s, listed in one call per kind (the SDK's
    containers.list inspects each one, and fails on one removed meanwhile)."""
    selector = {"label": f"{LABEL}={name}"}
    found = client.api.containers(all=True, filters=selector)
    return (
        [f"container {c['Names'][0].lstrip('/')}" for c in found]
        + [f"volume {v.name}" for v in client.volumes.list(filters=selector)]
        + [f"network {n.name}" for n in client.networks.list(filters=selector)]
    )


def test_up_starts_hub_proxy_and_sso_and_says_where(
    platform: Platform, docker_client: docker.DockerClient
) -> None:
    assert f"{platform.name}-hub: started" in platform.up_output
    assert f"image {CT}: registry.heps.ihep.ac.cn/heps/{CT}:{CT_VERSION}" in (platform.up_output)
    status = platform.site.heps("platform", "status", "--name", platform.name)
    assert status.returncode == 0, status.stderr
    assert f"platform {platform.name}: {platform.url}" in status.stdout
    assert re.search(r"SSO testbed: http://[\d.]+:\d+ \(running\)", status.stdout)
    assert f"container {platform.name}-hub: running" in status.stdout
    assert requests.get(f"{platform.url}/hub/health", timeout=10).ok


def test_up_again_changes_nothing(platform: Platform) -> None:
    again = platform.up()
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{platform.name}-hub: unchanged" in again.stdout
    assert f"{platform.name}-proxy: unchanged" in again.stdout
    assert "(unchanged)" in again.stdout.split("SSO testbed:")[1].splitlines()[0]


@pytest.mark.browser
def test_scientist_logs_in_and_reconstructs_in_jupyterlab_as_herself(
    platform: Platform, page: Page, docker_client: docker.DockerClient
) -> None:
    log_in(page, platform, "alice")
    page.wait_for_url("**/hub/home")
    page.goto(f"{platform.url}/hub/spawn")
    ct = page.locator(".heps-profile[data-slug=ct-reconstruction]")
    expect(ct).to_contain_text("CT 3D reconstruction")
    expect(ct).to_contain_text("FBP and iterative reconstruction")  # what it is for
    cores = min(4, docker_client.info()["NCPU"])
    expect(ct.locator(".heps-amounts")).to_contain_text(f"{cores} CPU cores")
    expect(ct.locator(".heps-amounts")).to_contain_text("GiB memory, no GPU")
    folders = page.locator(".heps-folders")
    expect(folders).to_contain_text("your home folder /home/alice")
    expect(folders).to_contain_text("/data/beamlines/b1")
    # operators' details (tags, digests, "built on this machine") folded away
    details = ct.locator(".heps-operator")
    expect(details).not_to_have_attribute("open", "")
    expect(details.get_by_text("image tag")).to_be_hidden()
    expect(page.get_by_text("built on this machine").first).to_be_hidden()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "1-spawn-page.png"), full_page=True)
    details.locator("summary").click()
    expect(details).to_contain_text(f"image tag {CT_VERSION}")
    # built here, not pulled: nothing else was made present, and says so
    spark = page.locator(".heps-profile[data-slug=spark-driver]")
    expect(spark).to_contain_text("not available right now")
    expect(spark.locator("input")).to_be_disabled()

    # a user-init container an interrupted spawn left behind is replaced, not a failure
    init_image = re.search(r"^image user-init: (\S+)", platform.up_output, re.M)
    assert init_image, platform.up_output
    init = f"{platform.name}-init-alice"
    labels = {LABEL: platform.name}
    docker_client.api.create_container(init_image.group(1), ["true"], name=init, labels=labels)

    spawn(page, platform, "ct-reconstruction")
    page.wait_for_url("**/hub/spawn-pending/alice**", timeout=60_000)
    phase = re.compile(
        r"Your request reached the hub|Preparing your account|Starting your environment"
        r"|Waiting for JupyterLab|JupyterLab answers"
    )
    expect(page.locator("#progress-message")).to_have_text(phase, timeout=60_000)
    page.screenshot(path=str(SHOTS / "2-pending-page.png"))
    page.wait_for_url("**/user/alice/lab**", timeout=180_000)
    # JupyterLab opens in her home, where `data` leads to her groups' folders
    listing = page.locator(".jp-DirListing-content")
    expect(listing.get_by_text("data", exact=True)).to_be_visible(timeout=60_000)
    page.screenshot(path=str(SHOTS / "3-jupyterlab-home.png"))
    page.locator(".jp-LauncherCard[data-category=Notebook]").first.click(timeout=60_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
    page.locator(".jp-Cell .cm-content").first.click()
    page.keyboard.insert_text(CELL)
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output").first
    expect(output).to_contain_text("uid=", timeout=120_000)
    page.screenshot(path=str(SHOTS / "4-reconstruction.png"))
    text = output.inner_text()
    assert re.search(r"fbp rmse=0\.\d+ sart rmse=0\.\d+ OK", text), text
    assert "uid=20001(alice) gid=20001(heps-users) groups=20001(heps-users),20101(b1-users)" in (
        text
    )

    server = docker_client.containers.get(f"{platform.name}-alice")
    config, host = server.attrs["Config"], server.attrs["HostConfig"]
    assert config["Image"] == f"registry.heps.ihep.ac.cn/heps/{CT}:{CT_VERSION}"
    assert config["User"] == "20001:20001"
    assert config["Labels"]["heps.ihep.ac.cn/user"] == "alice"
    assert sorted(host["GroupAdd"]) == ["20001", "20101"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["CapDrop"] == ["ALL"]
    cpus = min(4, docker_client.info()["NCPU"])
    assert host["CpuQuota"] == cpus * host["CpuPeriod"]
    assert host["Memory"] == min(16 * 2**30, docker_client.info()["MemTotal"])
    # her passwd and group entries: user-init's files, bound read-only from its volume
    mounts = {m["Destination"]: m for m in server.attrs["Mounts"]}
    for name in ("passwd", "group"):
        bound = mounts[f"/etc/{name}"]
        assert bound["Type"] == "bind" and bound["RW"] is False, bound
        assert bound["Source"].endswith(f"/{platform.name}-identity-alice/_data/{name}")
    # user-init's container, removed beside the spawn rather than on its path, is gone
    assert not docker_client.api.containers(all=True, filters={"name": f"^/{init}$"})
    # it ran in the network namespace of a container that has no network, shared by all
    netless = docker_client.api.inspect_container(f"{platform.name}-netless")
    assert netless["State"]["Running"] and netless["Config"]["User"] == "65534"
    assert netless["HostConfig"]["NetworkMode"] == "none"
    assert netless["HostConfig"]["CapDrop"] == ["ALL"] and netless["HostConfig"]["ReadonlyRootfs"]


@pytest.mark.browser
def test_outsider_is_refused_with_the_reason(platform: Platform, page: Page) -> None:
    log_in(page, platform, "oscar")
    expect(page.locator("body")).to_contain_text(
        "Login refused: oscar is in none of the groups allowed on this platform (heps-users)"
    )
    page.goto(f"{platform.url}/hub/spawn")
    expect(page).to_have_url(re.compile(r"/hub/login"))


@pytest.mark.browser
def test_identity_the_site_policy_refuses_fails_the_spawn_with_the_reason(
    platform: Platform, page: Page, docker_client: docker.DockerClient
) -> None:
    log_in(page, platform, "mallory")
    page.wait_for_url("**/hub/home")
    spawn(page, platform, "ct-reconstruction")
    expect(page.locator("body")).to_contain_text(
        "user-init refused this account: heps-user-init: refused: uid: 500 is outside "
        "the allowed range",
        timeout=60_000,
    )
    expect(page.locator("body")).to_contain_text("Send this message to the HEPS helpdesk")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "5-refused.png"))
    assert not docker_client.containers.list(all=True, filters={"name": f"{platform.name}-mallory"})


def _session(platform: Platform, user: str) -> requests.Session:
    """Logged in without a browser: the same redirects and form, followed by requests."""
    session = requests.Session()
    form = session.get(f"{platform.url}/hub/oauth_login?next=%2Fhub%2Fhome", timeout=30)
    action = re.search(r'action="([^"]+)"', form.text)
    assert action, form.text[-1000:]
    issuer = form.url.split("/interaction/")[0]
    done = session.post(
        issuer + action.group(1), data={"username": user, "password": f"{user}-testbed"}
    )
    assert done.ok and done.url.endswith("/hub/home"), done.text[-1000:]
    return session


def _answers(response: requests.Response) -> bool:
    """JupyterLab's /api itself, not the hub's spawn-pending page on the way."""
    kind = response.headers.get("content-type", "")
    return response.status_code == 200 and kind.startswith("application/json")


def _started(client: docker.DockerClient, name: str) -> str:
    return str(client.containers.get(name).attrs["State"]["StartedAt"])


def test_promotion_reaches_users_without_restarting_the_hub(
    platform: Platform, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    site = platform.site
    report = tmp_path / "report.json"
    ran = site.heps("run", "ct-reconstruction", "--report", str(report))
    assert ran.returncode == 0, ran.stderr[-2000:]
    promoted = site.heps("promote", "--overlay", "testbed", "--report", str(report))
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    entry = next(e for e in json.loads(report.read_text())["recipes"] if e["name"] == CT)
    tag, digest = entry["references"][-1].rpartition(":")[2], entry["digest"]
    pinned = f"{entry['references'][-1]}@{digest}"  # as promote writes it
    assert pinned in (site.repo / "k8s-overlays/overlays/testbed/profile-list.yaml").read_text()
    hub_started = _started(docker_client, f"{platform.name}-hub")

    again = platform.up()
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"image ct-reconstruction: {pinned} (pulled)" in again.stdout or (
        f"image ct-reconstruction: {pinned} (here)" in again.stdout
    )
    assert f"{platform.name}-hub: unchanged" in again.stdout

    session = _session(platform, "bruno")
    page = session.get(f"{platform.url}/hub/spawn", timeout=30).text
    assert f"image tag <code>{tag}</code>, digest <code>{digest}</code>" in page
    xsrf = session.cookies.get("_xsrf", path="/hub/") or ""
    data = {"profile": "ct-reconstruction", "_xsrf": xsrf}
    session.post(f"{platform.url}/hub/spawn", data=data, timeout=60)
    deadline = time.monotonic() + 180
    while not _answers(session.get(f"{platform.url}/user/bruno/api", timeout=30)):
        assert time.monotonic() < deadline, "bruno's server never answered"
        time.sleep(1)
    server = docker_client.containers.get(f"{platform.name}-bruno")
    assert server.attrs["Config"]["Image"] == pinned
    assert _started(docker_client, f"{platform.name}-hub") == hub_started


def providers(state: Path) -> list[int]:
    """Pids of every process running the SSO testbed of the platform in `state`: the
    venv's node launcher and the node it runs."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # ended meanwhile
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "provider.mjs" in line and str(state) in line:
                found.append(int(proc.name))
    return found


def test_down_removes_everything_it_made_and_nothing_else(
    platform: Platform, docker_client: docker.DockerClient
) -> None:
    bystander = docker_client.volumes.create(f"{platform.name}-bystander")
    try:
        assert objects(docker_client, platform.name)
        state = Path(platform.site.env["HEPS_STATE_DIR"]) / "platform" / platform.name
        pid = json.loads((state / "provider.pid").read_text())["pid"]
        assert pid in providers(state)
        down = platform.site.heps("platform", "down", "--name", platform.name)
        assert down.returncode == 0, down.stderr
        assert f"removed network {platform.name}" in down.stdout
        assert objects(docker_client, platform.name) == []
        assert not state.exists()
        assert (
            not Path(f"/proc/{pid}").exists()
            or "provider.mjs" not in Path(f"/proc/{pid}/cmdline").read_text()
        )
        assert not providers(state), "the SSO testbed's node outlived `heps platform down`"
        docker_client.volumes.get(bystander.name)  # still there
    finally:
        bystander.remove()


def test_down_during_a_spawn_leaves_nothing_behind(
    platform: Platform, docker_client: docker.DockerClient
) -> None:
    """A platform of its own, taken down while a user's server is being made."""
    other = Platform(
        platform.site, f"{platform.name}-x", f"http://127.0.0.1:{free_port()}",
        free_port(), platform.users,
    )  # fmt: skip
    done = other.up()
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    try:
        session = _session(other, "bruno")
        xsrf = session.cookies.get("_xsrf", path="/hub/") or ""
        data = {"profile": "ct-reconstruction", "_xsrf": xsrf}
        session.post(f"{other.url}/hub/spawn", data=data, timeout=60)  # returns at once
        deadline = time.monotonic() + 60
        while not any(
            "-bruno" in o or "identity-bruno" in o for o in objects(docker_client, other.name)
        ):
            assert time.monotonic() < deadline, "the spawn never began"
            time.sleep(0.05)
    finally:
        down = other.site.heps("platform", "down", "--name", other.name)
    assert down.returncode == 0, down.stderr
    assert objects(docker_client, other.name) == []
    time.sleep(3)  # nothing the hub had under way appears afterwards
    assert objects(docker_client, other.name) == []
