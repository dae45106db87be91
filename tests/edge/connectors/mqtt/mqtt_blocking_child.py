"""Child process for the crash test: runs an MqttConnector whose sink never returns from submit().

It prints "received <n>" whenever its count of delivered messages changes, so the parent knows
the messages are in this process (received, not acknowledged) before it kills it with SIGKILL."""

from __future__ import annotations

import asyncio
import sys

from mqtt_testkit import SqliteSink, machine

from edge.connectors.mqtt.connector import MqttConnector


async def main(port: int, topic: str, client_id: str, protocol: str, db: str) -> None:
    """Run until killed."""
    sink = SqliteSink(db)
    sink.block.set()
    connector = MqttConnector(machine(topic, port, protocol=protocol, client_id=client_id), sink,
                              group_commit_ms=1)
    await connector.start()
    last = None
    while True:
        now = ("subscribed" if connector.state.detail["subscribed"] else "connecting", connector.stats.messages_received)
        if now != last:
            last = now
            print(f"{now[0]} received {now[1]}", flush=True)
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    port, topic, client_id, protocol, db = sys.argv[1:6]
    asyncio.run(main(int(port), topic, client_id, protocol, db))
