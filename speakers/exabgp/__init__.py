"""ExaBGP 5.0.15 as a speaker: one ExaBGP process per peer, JSON events relayed over a unix socket.

``render`` writes the config, ``decode`` turns ExaBGP's JSON lines into ``SpeakerEvent``s, ``session``
is the sans-IO state machine, ``relay`` is the API program ExaBGP runs, ``process`` the asyncio edge.
"""

EXABGP_VERSION = "5.0.15"
"""The pinned ExaBGP release (pyproject.toml); ``JSON_FORMAT`` is the JSON format it writes."""
JSON_FORMAT = "5.0.0"
