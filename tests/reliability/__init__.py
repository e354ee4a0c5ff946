"""The reliability suite (issue 12): starts its own embedded stack, breaks it the way hostile tenants and
unlucky operators do, and regenerates a figures table.

    python -m tests.reliability [--quick | --full] [--out tests/reliability/results.md] [--only ingest,...]

Modules: ``harness`` (the stack, its processes, kill and restart, HTTP clients), ``probes`` (the /health
prober and the RSS sampler, run as a separate process for the whole run), ``corpus`` and ``hostile_inputs``
(documents and hostile payloads, built in memory), ``scenarios/`` (one module per family of scenarios),
``report`` (figures, goals, the markdown table), ``runner`` (the order of the run). ``test_quick.py`` runs a
reduced run under pytest (``integration`` and ``slow``) and asserts the correctness figures only.
"""
