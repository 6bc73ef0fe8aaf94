"""Composition root, settings, CLI and channel adapters (the only aiogram user)."""
