"""The one error type of the data layer, in its own module so that the readers
(:mod:`unetseg.data.io`, :mod:`unetseg.data.volumes`) can share it without importing each other."""


class DataError(ValueError):
    """An input file or folder that cannot be used; the message names it."""
