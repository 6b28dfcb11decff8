"""xDS serving: the versioned snapshot cache, the ADS server and its per-stream state machines
(SotW and delta), ACK/NACK events, node views.
"""
