"""amtrace edge agent: connectors, pipeline, durable outbox, InfluxDB writer, build-file validation."""
