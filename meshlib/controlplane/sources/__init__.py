"""Sources of objects: YAML files (watched) and a live Kubernetes API (list/watch reflectors)."""
