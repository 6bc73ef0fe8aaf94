"""The conversation engine and its flows; pure asyncio and our own types.

Never imports a messenger library: channels live in `bot/`.
"""
