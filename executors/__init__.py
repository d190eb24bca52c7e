"""Sample executors used by the docs, the demo and the integration tests."""
