"""Validated models of the Kubernetes and Istio objects the control plane reads, and the field
readers that name the path they reject.
"""
