"""MQTT connector (paho-mqtt 2.x): persistent session, QoS 1, acknowledge only after the outbox has it."""
