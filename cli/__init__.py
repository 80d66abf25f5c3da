"""The ``candleflow`` command line: a thin shell over the flows and libraries."""
