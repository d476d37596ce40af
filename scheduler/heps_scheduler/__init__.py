"""The HEPS scoring scheduler: a kube-scheduler-style framework for the platform's user pods.

Layers, lowest first: `model` (pods, nodes, QoS), `snapshot` (cluster state as arrays,
updated in place), `cycle` (status and cycle state), `filters`, `scores` and `fgd`
(plugins), `framework` (kube-scheduler's extension points, one cycle), `plugins` (the
registry by name), `queue`, `config`, and on top `trace` / `simulate` / `cli`. Nothing
here imports the delivery pipeline (`heps`).
"""

__version__ = "0.1.0"
