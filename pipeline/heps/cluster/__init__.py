"""The cluster side: render and check an overlay (`manifests`), make a cluster run it
(`reconcile`) through the Kubernetes API (`kube_api`)."""
