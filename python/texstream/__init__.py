"""texstream for Python: push numpy arrays to texstream viewers, get frames back as arrays.

A thin layer over the native module ``texstream._texstream``, which is the texstream
Rust library itself (pyo3 + rust-numpy): the same protocol, checksums, reconnects,
tokens and TLS as the ``texstream`` command line and windows.

    import numpy as np, texstream
    with texstream.Sender(listen="127.0.0.1:7878") as s:      # texstream view --connect 7878
        s.wait_for_peers()
        s.send(np.zeros((480, 640, 4), np.uint8))

    with texstream.Receiver(connect="127.0.0.1:7878") as r:   # texstream serve pattern
        frame = r.recv(timeout=5)
        print(frame.array.shape, frame.seq, frame.latency)

Arrays sent: C-contiguous, shape (height, width) or (height, width, channels), uint8 or
float32 with 1, 3 or 4 channels, float16 with 4 (``ACCEPTED``; each travels in a pixel
format of its own, ``FORMATS``); anything else raises ``BadArray`` naming what is
accepted. A received frame's array has the shape and dtype it was sent with, but a
(height, width, 1) array comes back as (height, width).
"""

from collections import namedtuple
from os import fspath

from . import _texstream
from ._errors import AuthError, BadArray, Closed, Error, Timeout

__all__ = [
    "ACCEPTED",
    "AuthError",
    "BadArray",
    "Closed",
    "Error",
    "FORMATS",
    "Frame",
    "ReceivedFile",
    "Receiver",
    "Sender",
    "Text",
    "Timeout",
]

#: What ``Sender.send`` accepts.
ACCEPTED = _texstream.ACCEPTED

#: The wire's pixel formats and the arrays they are: name -> (dtype, channels), where
#: channels ``None`` is a (height, width) array.
FORMATS = {
    "r8": ("uint8", None),
    "rgb8": ("uint8", 3),
    "rgba8": ("uint8", 4),
    "bgra8": ("uint8", 4),
    "r32f": ("float32", None),
    "rgb32f": ("float32", 3),
    "rgba32f": ("float32", 4),
    "rgba16f": ("float16", 4),
}

#: A text message: who wrote it, what, and when (seconds since the Unix epoch).
Text = namedtuple("Text", "sender body time")

#: A file a peer sent, stored in ``files_dir``.
ReceivedFile = namedtuple("ReceivedFile", "name path size")


class Frame:
    """A received frame.

    ``array``: a new numpy array, the frame as sent (shape and dtype; one channel comes
    back as (height, width)), yours to keep and write. ``seq``: the sender's frame
    number. ``capture_time``: when the sender captured it (seconds since the Unix epoch,
    the sender's clock). ``latency``: seconds from capture to arrival here (meaningful
    when both clocks agree, as on one machine). ``format``: the wire's pixel format, a
    key of ``FORMATS`` ("bgra8" comes from GPU senders).
    """

    __slots__ = ("array", "seq", "capture_time", "latency", "format")

    def __init__(self, array, seq, capture_us, received_us, format):
        self.array = array
        self.seq = seq
        self.capture_time = capture_us / 1e6
        self.latency = (received_us - capture_us) / 1e6
        self.format = format

    def __repr__(self):
        return (
            f"Frame(seq={self.seq}, shape={self.array.shape}, dtype={self.array.dtype}, "
            f"format={self.format!r}, latency={self.latency * 1e3:.2f} ms)"
        )


def _addresses(value, what):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        raise TypeError(f"{what} must be a string or a list of strings") from None


class _Endpoint:
    """What senders and receivers share: text, files, peers, closing."""

    def __init__(self, role, listen, connect, source, name, token, tls, tls_dir, files_dir):
        self._node = _texstream._Node(
            role,
            None if listen is None else str(listen),
            _addresses(connect, "connect"),
            _addresses(source, "source"),
            name,
            token,
            bool(tls),
            None if tls_dir is None else fspath(tls_dir),
            None if files_dir is None else fspath(files_dir),
        )

    @property
    def address(self):
        """The ``host:port`` this endpoint listens on (the real port for port 0), or None."""
        return self._node.address

    @property
    def closed(self):
        return self._node.closed

    def send_text(self, text):
        """Sends a text message to every peer."""
        self._node.send_text(str(text))

    def send_file(self, path, *, timeout=60.0):
        """Offers the file at ``path`` to every connected peer that takes files.

        Waits up to ``timeout`` seconds until each has stored it with a matching
        checksum (``timeout=None``: returns once offered). Returns how many peers it
        went to. Raises ``Closed`` when no connected peer takes files, ``Error`` when a
        peer refused or failed it, ``Timeout`` when not confirmed in time.
        """
        return self._node.send_file(fspath(path), timeout)

    def texts(self, timeout=0):
        """The texts received since the last call, as ``Text`` tuples.

        With ``timeout`` (seconds), waits that long for one when none is waiting.
        """
        return [Text(f, b, t / 1e6) for f, b, t in self._node.texts(timeout)]

    def files(self, timeout=0):
        """The files received since the last call, as ``ReceivedFile`` tuples (needs
        ``files_dir``). With ``timeout``, waits that long for one when none is waiting."""
        return [ReceivedFile(n, p, s) for n, p, s in self._node.files(timeout)]

    def peers(self):
        """Every peer, as dicts (``name``, ``address``, ``connected``, ``state``,
        ``frames_sent``, ``frames_received``, ``last_error`` …)."""
        return self._node.peers()

    def wait_for_peers(self, count=1, timeout=10.0):
        """Waits until ``count`` peers are connected; returns ``peers()``.

        Raises ``Timeout`` (saying why, when known) or ``AuthError`` (a refused token)."""
        return self._node.wait_for_peers(count, timeout)

    def stats(self):
        """The endpoint's figures (frames received and dropped, checksum failures …)."""
        return self._node.stats()

    def close(self):
        """Says goodbye to every peer and stops. Calls after it raise ``Closed``."""
        self._node.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self.closed else f"listening on {self.address}" if self.address else "dialing"
        return f"<texstream.{type(self).__name__} {state}>"


class Sender(_Endpoint):
    """Streams numpy arrays as frames to every viewer that connects (or that it dials).

    ``listen``: ``"host:port"`` (or a port) to accept viewers on; ``connect``: one or
    more ``"host:port"`` to dial (redialed with backoff). Neither: listens on
    127.0.0.1:7878. ``token``: a shared secret every peer must know. ``tls``: encrypt
    (both ends must); ``tls_dir`` holds the self-signed certificate and known hosts
    (default ``~/.config/texstream``). ``files_dir``: take files peers send into it.
    """

    def __init__(self, listen=None, connect=None, *, name=None, token=None, tls=False,
                 tls_dir=None, files_dir=None):
        if listen is None and connect is None:
            listen = "127.0.0.1:7878"
        super().__init__("sender", listen, connect, None, name or "texstream python sender",
                         token, tls, tls_dir, files_dir)

    def send(self, array, *, wait=True):
        """Sends ``array`` as one frame to every connected peer; returns its number.

        ``array``: C-contiguous, (height, width[, channels]), one of ``FORMATS``
        (``ACCEPTED``); anything else raises ``BadArray`` and the sender stays usable.
        Formats other than rgba8 reach only peers of a texstream version that takes
        them; an older peer skips those frames (its ``frames_format_skipped`` in
        ``peers()`` counts them). It is copied
        once (into the frame), without the GIL. ``wait=True``: first waits (at most
        1 s) until every connected peer has taken the previous frame, so none is
        skipped; ``wait=False``: never waits, and a slow peer skips frames.
        """
        return self._node.send(array, bool(wait))


class Receiver(_Endpoint):
    """Receives frames (as numpy arrays), texts and files from a sender.

    ``connect``: ``"host:port"`` of a sender (redialed with backoff); ``listen``: accept
    a sender that dials us; ``source``: a sender announced on the LAN under that name
    (as ``texstream list`` shows). None of them: dials 127.0.0.1:7878. Iterating gives
    frames until the receiver is closed.
    """

    def __init__(self, connect=None, listen=None, source=None, *, name=None, token=None,
                 tls=False, tls_dir=None, files_dir=None):
        if listen is None and connect is None and source is None:
            connect = "127.0.0.1:7878"
        super().__init__("viewer", listen, connect, source, name or "texstream python receiver",
                         token, tls, tls_dir, files_dir)

    def recv(self, timeout=None):
        """The newest frame, as a ``Frame``; waits up to ``timeout`` seconds (None: for
        ever) without the GIL. Of the frames waiting (at most two), older ones are
        skipped (``stats()["frames_skipped"]``), so a slow consumer sees the latest.
        Raises ``Timeout``, ``AuthError`` or ``Closed``."""
        return Frame(*self._node.recv(timeout))

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.recv()
        except Closed:
            raise StopIteration from None
