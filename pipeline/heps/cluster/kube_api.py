"""The Kubernetes API for `heps reconcile`, through the official client's DynamicClient
(discovery finds each kind's endpoint). API errors become the two error kinds: 5xx and
timeouts are temporary, anything else fails the reconcile naming the object."""

from __future__ import annotations

import os
from typing import Any

from heps.cluster.manifests import Key, key_of, show
from heps.core.errors import ConfigError, StageError, TemporaryError
from heps.core.stages import Stage


def credentials_present() -> bool:
    """KUBECONFIG, ~/.kube/config or an in-cluster service account."""
    return bool(
        os.environ.get("KUBECONFIG")
        or os.path.exists(os.path.expanduser("~/.kube/config"))
        or os.environ.get("KUBERNETES_SERVICE_HOST")
    )


class KubeCluster:
    def __init__(self, context: str | None = None) -> None:
        from kubernetes import client, config, dynamic

        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
                config.load_incluster_config()
                api_client = client.ApiClient()
            else:
                api_client = config.new_client_from_config(context=context)
            self.dynamic = dynamic.DynamicClient(api_client)
        except config.ConfigException as exc:
            raise ConfigError(
                f"Kubernetes credentials: {exc}; set KUBECONFIG (and --context), "
                "or use --dry-run to render and diff without a cluster"
            ) from None
        except Exception as exc:  # discovery: connection refused, TLS, 401
            raise ConfigError(
                f"Kubernetes API: cannot connect ({type(exc).__name__}: {exc})"
            ) from None

    def _call(self, key: Key, action: str, call: Any) -> Any:
        from kubernetes.dynamic import exceptions

        try:
            return call()
        except exceptions.NotFoundError:
            return None
        except exceptions.DynamicApiError as exc:
            status = exc.status or 0
            message = exc.summary()
            if status >= 500 or status == 429:
                raise TemporaryError(f"Kubernetes API: {action} {show(key)}: {message}") from None
            raise StageError(Stage.RECONCILE, f"{action} {show(key)}: {message}") from None

    def _resource(self, key: Key) -> Any:
        from kubernetes.dynamic import exceptions

        try:
            return self.dynamic.resources.get(api_version=key[0], kind=key[1])
        except exceptions.ResourceNotFoundError:
            raise StageError(
                Stage.RECONCILE, f"{show(key)}: the cluster serves no {key[0]} {key[1]}"
            ) from None

    def get(self, key: Key) -> dict[str, Any] | None:
        resource = self._resource(key)
        found = self._call(key, "read", lambda: resource.get(name=key[3], namespace=key[2] or None))
        return None if found is None else dict(found.to_dict())

    def apply(self, obj: dict[str, Any], manager: str, dry_run: bool) -> dict[str, Any]:
        key = key_of(obj)
        resource = self._resource(key)
        result = self._call(
            key,
            "apply",
            lambda: resource.server_side_apply(
                body=obj,
                name=key[3],
                namespace=key[2] or None,
                field_manager=manager,
                force_conflicts=True,
                dry_run="All" if dry_run else None,
            ),
        )
        if result is None:  # 404: the object's namespace (or its API) is not there
            raise StageError(
                Stage.RECONCILE, f"apply {show(key)}: not found; is its namespace there?"
            )
        return dict(result.to_dict())

    def delete(self, key: Key) -> None:
        resource = self._resource(key)
        self._call(
            key,
            "delete",
            lambda: resource.delete(
                name=key[3], namespace=key[2] or None, propagation_policy="Background"
            ),
        )
