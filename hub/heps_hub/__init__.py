"""The project's JupyterHub module: IHEPSSO login, KubeSpawner wiring, hub configuration."""

__version__ = "0.1.0"
