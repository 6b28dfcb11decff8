"""The mesh certificate authority: root and SPIFFE workload certificates."""
