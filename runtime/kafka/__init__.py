"""The gateway's embedded Apache Kafka: install, configure, supervise, and client helpers."""
