"""`python -m edge.connectors.opcua make-cert|fetch-cert|browse ...`."""

from edge.connectors.opcua.cli import main

raise SystemExit(main())
