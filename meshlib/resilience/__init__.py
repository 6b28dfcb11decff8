"""Resilience: retries, timeouts, faults, circuit breaking, outlier detection."""
