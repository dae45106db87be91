"""Protocol connectors, one folder per protocol (mqtt, opcua)."""
