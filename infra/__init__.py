"""Local infrastructure: the single-node Kafka broker used by the CLI and the test fixtures."""
