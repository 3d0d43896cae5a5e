"""What the tests share that is not a test: servers started for a test (the app under uvicorn, nginx, redis),
fakes at the service's edges (a webhook receiver, an SMTP server), generated audio, empty PostgreSQL schemas and
the shared data's reference sets. Benchmarks (`bench/`) reuse these; tests import nothing from `bench/`."""
