"""The amtrace-server console script: says which libraries are missing before anything imports them.

The server's libraries are the `server` extra (pyproject.toml); an install made for an edge gateway
(`pip install amtrace[edge]`) has the command but not them."""

from __future__ import annotations

import importlib.util
import sys

# Import name -> distribution, for the server extra (tests/test_packaging.py keeps the two lists in step).
SERVER_LIBRARIES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "sqlalchemy": "sqlalchemy", "alembic": "alembic",
                    "pydantic_settings": "pydantic-settings", "argon2": "argon2-cffi", "jwt": "pyjwt",
                    "reportlab": "reportlab", "matplotlib": "matplotlib", "PIL": "pillow", "jinja2": "jinja2",
                    "fastapi_offline": "fastapi-offline", "iapws": "iapws"}


def missing() -> list[str]:
    """Distributions of the server extra that are not installed."""
    return [dist for module, dist in SERVER_LIBRARIES.items() if importlib.util.find_spec(module) is None]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the amtrace-server console script."""
    lacking = missing()
    if lacking:
        print(f"amtrace-server: this install lacks the server's libraries ({', '.join(lacking)}); install them "
              f"with: pip install 'amtrace[server]'", file=sys.stderr)
        return 3
    from server.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
