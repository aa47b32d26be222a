"""The ``local`` provider: a function emulator on this machine (cold starts, scale to zero)."""
