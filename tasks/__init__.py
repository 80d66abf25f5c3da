"""Prefect tasks: small typed wrappers around library calls (retries only where I/O can fail)."""
