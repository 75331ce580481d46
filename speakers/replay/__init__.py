"""Replay speakers: MRT files as the feeder's table or as speaker events."""
