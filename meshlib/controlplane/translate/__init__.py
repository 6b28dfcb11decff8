"""Translation: Kubernetes and Istio objects -> xDS resources named as istiod names them
(registry, rule index, routes, clusters, TLS, inbound listeners, the Envoy view).
"""
