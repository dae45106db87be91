"""Live machine state from agent heartbeats, kept in memory and pushed to dashboards by server-sent events."""
