"""The pure core: event model, protocol messages, subscription matching, encoding.

Nothing in this package performs I/O, imports FastAPI or Redis, or awaits.
"""
