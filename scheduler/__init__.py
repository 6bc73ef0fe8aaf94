"""Scheduled work. APScheduler only triggers these jobs; nothing durable lives in it.

Planners for reminders and digests and the outbox dispatcher arrive with their
issues; today the only job is housekeeping of the inbound dedupe log.
"""
