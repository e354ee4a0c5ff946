"""``python -m api.cli`` = ``sieve`` (the embedded stack starts its worker and API this way)."""

from api.cli.main import app

app()
