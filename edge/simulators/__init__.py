"""Simulated machines that look like real ones on the wire (MQTT publishers, OPC UA servers)."""
