"""Pages for people on the floor and in the office: the operator kiosk, the production manager's dashboard and
the quality engineer's pages, with the JSON they read (server/ui/README.md)."""
