# JupyterHub configuration of the HEPS platform: everything comes from the mounted
# hub-config ConfigMap (HEPS_HUB_CONFIG_DIR) and, for secrets, the environment.
from heps_hub.config import configure_from_environment

configure_from_environment(get_config())  # type: ignore[name-defined]  # noqa: F821
