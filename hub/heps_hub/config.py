"""Apply the hub's values to JupyterHub's traitlets config: the body of
jupyterhub_config.py, as a function so tests load it the way JupyterHub does."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from heps_hub import values as hub_values


def configure(c: Any, values: hub_values.HubValues) -> None:
    """Fill `c` (JupyterHub's config object) from `values`. Secrets stay in the
    environment: OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET (read by oauthenticator),
    JUPYTERHUB_CRYPT_KEY (auth state), CONFIGPROXY_AUTH_TOKEN (proxy API)."""
    c.JupyterHub.authenticator_class = "heps_hub.auth.IHEPSSOAuthenticator"
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.JupyterHub.public_url = values.public_url
    c.JupyterHub.db_url = values.db_url
    c.JupyterHub.hub_ip = "0.0.0.0"  # noqa: S104 - inside its pod, behind the Service
    c.JupyterHub.hub_connect_url = values.hub_connect_url
    c.JupyterHub.cleanup_servers = False  # user sessions outlive a hub restart
    c.JupyterHub.concurrent_spawn_limit = values.concurrent_spawn_limit
    c.JupyterHub.active_server_limit = values.active_server_limit
    c.ConfigurableHTTPProxy.should_start = False  # the proxy runs as its own Deployment
    c.ConfigurableHTTPProxy.api_url = values.proxy_api_url

    oauth = values.oauth
    auth = c.IHEPSSOAuthenticator
    auth.authorize_url = oauth.authorize_url
    auth.token_url = oauth.token_url
    auth.userdata_url = oauth.userdata_url
    auth.oauth_callback_url = oauth.callback_url
    auth.scope = list(oauth.scope)
    auth.username_claim = oauth.username_claim
    auth.allowed_groups = set(oauth.allowed_groups)
    auth.admin_groups = set(oauth.admin_groups)
    auth.logout_redirect_url = oauth.logout_redirect_url
    auth.refresh_pre_spawn = True
    auth.auth_refresh_age = 300
    auth.spawner_values = values.spawner

    spawner = values.spawner
    k = c.KubeSpawner
    k.namespace = spawner.namespace
    k.scheduler_name = spawner.scheduler_name
    c.Spawner.start_timeout = spawner.start_timeout  # any spawner's (DockerSpawner's too)
    k.node_selector = dict(spawner.node_selector)
    k.profile_list = values.profiles
    for line in values.refused:  # one bad entry is left out, not the whole spawn page
        logging.getLogger("heps_hub").warning("profile not offered: %s", line)
    k.automount_service_account_token = False
    k.allow_privilege_escalation = False
    k.cmd = ["jupyterhub-singleuser"]
    k.default_url = "/lab"


def config_dir() -> Path:
    """Where the hub-config ConfigMap is mounted."""
    return Path(os.environ.get("HEPS_HUB_CONFIG_DIR", "/etc/jupyterhub/heps"))


def configure_from_environment(c: Any) -> None:
    """What jupyterhub_config.py runs: values from HEPS_HUB_CONFIG_DIR, then, on one
    machine (`heps platform up`), the local settings of HEPS_HUB_LOCAL over them."""
    try:
        values = hub_values.load(config_dir())
    except hub_values.ValuesError as exc:  # fail closed: one line, no hub, no traceback
        logging.getLogger("heps_hub").error("hub not started: %s", exc)
        raise SystemExit(2) from None
    configure(c, values)
    if os.environ.get("HEPS_HUB_LOCAL"):
        from heps_hub import local  # only the single-machine hub needs DockerSpawner

        local.configure(
            c, local.load(Path(os.environ["HEPS_HUB_LOCAL"])), values.concurrent_spawn_limit
        )
