"""The time-series database client (InfluxQL over HTTP): a foundation the cycle, stage and history domains read
through, so none of them depends on another for it."""
