"""The worker's HTTP face: FastAPI app (health, read-only SQL, Prometheus metrics) and its server thread."""
