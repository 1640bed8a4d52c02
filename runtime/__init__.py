"""Gateway runtime and control plane: embedded Kafka, workers, APIs."""
