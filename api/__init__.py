"""The HTTP signal service (``candleflow api``): a FastAPI shell over the live decision path, the
ledger and the registry, like the CLI a shell over the libraries."""
