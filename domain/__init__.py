"""Program rules as pure functions: no I/O, no clock, no database.

Every other package may import this one; it imports nothing of ours.
"""
