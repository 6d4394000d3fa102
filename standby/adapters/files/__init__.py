"""The shipped :class:`~standby.protocols.SlotStore`: ``JsonFileStore``.

Its atomic, fsynced writes, its quarantine of a file it cannot read
(failure mode 23) and the rule for specs that hold secrets. The public face
is :class:`standby.JsonFileStore`.
"""
