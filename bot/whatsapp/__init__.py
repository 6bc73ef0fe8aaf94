"""The WhatsApp Cloud API channel (pywa): webhook in, replies and outbox notices out."""
