"""The ``sieve`` command line (``api.cli.main`` builds it; one module per command group), the HTTP client of
the API (``api.cli.client``) and the embedded stack launcher (``api.cli.stack``)."""

from api.cli.main import app

__all__ = ["app"]
