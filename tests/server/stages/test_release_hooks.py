"""The stages announce an accepted release; the device history record is the subscriber that seals it."""

from __future__ import annotations

import pytest

from server.stages import release_hooks


def test_the_device_history_record_is_subscribed_once_the_server_is_wired():
    import server.registry  # noqa: F401 - what the app and the CLI import at start

    assert "device_history_record" in release_hooks._SUBSCRIBERS


def test_a_release_with_nobody_to_seal_it_is_refused(monkeypatch):
    monkeypatch.setattr(release_hooks, "_SUBSCRIBERS", {})
    with pytest.raises(release_hooks.NoReleaseSubscriber, match="unsealed"):
        release_hooks.accepted(None, actor=None, device=None, prepared=None)
    with pytest.raises(release_hooks.NoReleaseSubscriber):
        release_hooks.prepare(None, None)
