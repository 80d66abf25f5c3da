"""Prefect flows: they only put tasks in order and fan out per symbol × timeframe."""
