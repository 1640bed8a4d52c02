"""The gateway runtime: runs an execution plan's nodes around Kafka, supervises them, deploys atomically."""
