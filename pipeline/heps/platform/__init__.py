"""`heps platform`: the whole platform on one machine's Docker engine, from an overlay:
the hub with DockerSpawner, configurable-http-proxy, and an OpenID Connect provider
standing in for IHEPSSO. A layer above the cluster modules: it renders the overlay as
`heps reconcile` does and runs what the cluster would run."""
