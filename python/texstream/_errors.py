"""The texstream package's exceptions; the native module raises these by name."""


class Error(Exception):
    """Anything texstream could not do: a listen, a file, a peer's verdict."""


class BadArray(Error, ValueError):
    """An array ``send`` does not take; the message says what it takes."""


class Timeout(Error, TimeoutError):
    """Nothing came in time: no frame, no peer, no confirmation."""


class AuthError(Error):
    """A token was refused: the peer's is not ours, or one side has none."""


class Closed(Error):
    """The endpoint is closed, or no connected peer is there to take what was sent."""
