"""One module per outside system the pipeline talks to: the container engine (`engine`,
the only importer of the Docker SDK), git (`git`), the registry's HTTP API (`registry`),
and the embedded services a build host runs (`services`). Kubernetes and Jenkins each
have their single module in the layer that uses them (`cluster.kube_api`,
`ci.jenkins_server`)."""
