"""Replay evaluation of recorded bags through the localization runtime."""
