"""Retained samples: test coupons and retained devices kept for later testing, with their chain of custody."""
