"""Python to Python: frames as sent (shape, dtype, bytes, numbers), iteration, text and
files each way, typed errors that leave the sender usable, the GIL released while
waiting, context managers."""

import threading
import time

import numpy as np
import pytest

import texstream


@pytest.fixture
def pair(tmp_path):
    """A listening sender and a receiver dialing it, connected; both take files."""
    (tmp_path / "s").mkdir()
    (tmp_path / "r").mkdir()
    sender = texstream.Sender(listen="127.0.0.1:0", files_dir=tmp_path / "s")
    receiver = texstream.Receiver(connect=sender.address, files_dir=tmp_path / "r")
    sender.wait_for_peers(timeout=10)
    receiver.wait_for_peers(timeout=10)
    yield sender, receiver
    receiver.close()
    sender.close()


def test_frames_arrive_as_sent(pair, rng):
    sender, receiver = pair
    for shape in [(1, 1, 4), (17, 33, 4), (480, 640, 4)]:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        seq = sender.send(array)
        frame = receiver.recv(timeout=10)
        assert frame.array.shape == shape
        assert frame.array.dtype == np.uint8
        assert frame.array.flags.c_contiguous and frame.array.flags.writeable
        assert np.array_equal(frame.array, array)
        assert frame.seq == seq
        assert abs(frame.capture_time - time.time()) < 5
        assert 0 <= frame.latency < 5


def test_iteration_gives_frames_in_order_until_closed(pair, rng):
    sender, receiver = pair
    sent = [rng.integers(0, 256, (8, 8, 4), dtype=np.uint8) for _ in range(5)]
    got = []

    def consume():
        for frame in receiver:
            got.append(frame)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i, array in enumerate(sent):
        sender.send(array)
        # One at a time: the receiving node keeps only the newest two frames.
        wait_for(lambda: len(got) > i)
    receiver.close()
    consumer.join(10)
    assert not consumer.is_alive(), "iteration did not end when the receiver closed"
    assert [f.seq for f in got] == list(range(5))
    assert all(np.array_equal(f.array, a) for f, a in zip(got, sent))


def wait_for(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_text_and_files_both_ways(pair, tmp_path):
    sender, receiver = pair
    sender.send_text("from the sender")
    receiver.send_text("from the receiver \u2713")
    assert [t.body for t in receiver.texts(timeout=10)] == ["from the sender"]
    texts = sender.texts(timeout=10)
    assert [(t.sender, t.body) for t in texts] == [
        ("texstream python receiver", "from the receiver \u2713")
    ]

    down = tmp_path / "down.bin"
    down.write_bytes(np.arange(300_000, dtype=np.uint32).tobytes())
    assert sender.send_file(down, timeout=20) == 1
    [got] = receiver.files(timeout=10)
    assert got.name == "down.bin" and got.size == down.stat().st_size
    assert open(got.path, "rb").read() == down.read_bytes()

    up = tmp_path / "up.txt"
    up.write_text("results\n" * 1000)
    assert receiver.send_file(up, timeout=20) == 1
    [got] = sender.files(timeout=10)
    assert open(got.path, "rb").read() == up.read_bytes()


#: Every layout ``send`` takes: (dtype, shape, the format on the wire, the shape back).
LAYOUTS = [
    (np.uint8, (13, 21), "r8", (13, 21)),
    (np.uint8, (13, 21, 1), "r8", (13, 21)),
    (np.uint8, (13, 21, 3), "rgb8", (13, 21, 3)),
    (np.uint8, (13, 21, 4), "rgba8", (13, 21, 4)),
    (np.float32, (13, 21), "r32f", (13, 21)),
    (np.float32, (13, 21, 1), "r32f", (13, 21)),
    (np.float32, (13, 21, 3), "rgb32f", (13, 21, 3)),
    (np.float32, (13, 21, 4), "rgba32f", (13, 21, 4)),
    (np.float16, (13, 21, 4), "rgba16f", (13, 21, 4)),
]


def array_of(dtype, shape, rng):
    """Random values of `dtype`; floats include NaN, infinities, negative zero and
    subnormals, so that only a byte-exact path keeps them."""
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 256, shape, dtype=dtype)
    array = rng.standard_normal(shape).astype(dtype) * 1000
    flat = array.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).smallest_subnormal]
    flat[: len(specials)] = specials
    return array


@pytest.mark.parametrize("dtype,shape,wire,back", LAYOUTS, ids=lambda v: str(v))
def test_every_format_arrives_as_sent(pair, rng, dtype, shape, wire, back):
    sender, receiver = pair
    array = array_of(dtype, shape, rng)
    seq = sender.send(array)
    frame = receiver.recv(timeout=10)
    assert frame.seq == seq
    assert frame.format == wire
    assert texstream.FORMATS[wire] == (np.dtype(dtype).name, back[2] if len(back) == 3 else None)
    assert frame.array.dtype == dtype
    assert frame.array.shape == back
    assert frame.array.flags.c_contiguous and frame.array.flags.writeable
    assert frame.array.tobytes() == array.tobytes(), "not byte for byte"


def test_the_seed_examples_float32_arrays_go_through(pair, rng):
    """1000x1000x3 float32, as the program this grew out of sent them."""
    sender, receiver = pair
    for _ in range(3):
        array = rng.random((1000, 1000, 3), dtype=np.float32)
        seq = sender.send(array)
        frame = receiver.recv(timeout=10)
        assert (frame.seq, frame.format, frame.array.shape) == (seq, "rgb32f", (1000, 1000, 3))
        assert np.array_equal(frame.array, array)


def test_recv_gives_the_newest_frame_to_a_slow_consumer(pair):
    sender, receiver = pair
    for n in range(3):
        sender.send(np.full((4, 4, 4), n, np.uint8))
    # The receiving node holds the newest two; a consumer that comes late gets the
    # last one sent, not the one before it.
    wait_for(lambda: receiver.stats()["frames_received"] == 3)
    frame = receiver.recv(timeout=10)
    assert frame.seq == 2 and frame.array[0, 0, 0] == 2
    assert receiver.stats()["frames_skipped"] == 1
    with pytest.raises(texstream.Timeout):
        receiver.recv(timeout=0.2)


BAD = {
    "non-contiguous": lambda: np.zeros((16, 32, 4), np.uint8)[:, ::2],
    "float64": lambda: np.zeros((16, 16, 4), np.float64),
    "int64": lambda: np.zeros((16, 16, 3), np.int64),
    "uint16": lambda: np.zeros((16, 16, 4), np.uint16),
    "2 channels": lambda: np.zeros((16, 16, 2), np.uint8),
    "float16 with 3 channels": lambda: np.zeros((16, 16, 3), np.float16),
    "big-endian float32": lambda: np.zeros((16, 16, 3), ">f4"),
    "5-D": lambda: np.zeros((1, 1, 16, 16, 4), np.uint8),
    "5-D float32": lambda: np.zeros((1, 1, 16, 16, 3), np.float32),
    "1-D": lambda: np.zeros(16, np.uint8),
    "empty": lambda: np.zeros((0, 16, 4), np.uint8),
    "too wide": lambda: np.zeros((1, 16385, 4), np.uint8),
    # 4 GiB as a view of one value: no memory taken.
    "over the frame limit": lambda: np.broadcast_to(np.float32(0), (16384, 16384, 4)),
    "a list": lambda: [[[0, 0, 0, 0]]],
}


@pytest.mark.parametrize("what", BAD)
def test_a_bad_array_is_a_typed_error_and_the_sender_goes_on(pair, what, rng):
    sender, receiver = pair
    with pytest.raises(texstream.BadArray) as e:
        sender.send(BAD[what]())
    assert isinstance(e.value, ValueError)
    assert texstream.ACCEPTED in str(e.value)
    good = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    sender.send(good)
    frame = receiver.recv(timeout=10)
    assert np.array_equal(frame.array, good)
    assert frame.seq == 0, "the bad array took a frame number"


def test_an_array_past_a_receivers_frame_limit_is_refused_before_it_is_read(pair):
    sender, _ = pair
    with pytest.raises(texstream.BadArray, match="frame limit"):
        sender.send(BAD["over the frame limit"]())


def test_a_closed_peer_leaves_the_sender_usable(pair, tmp_path, rng):
    sender, receiver = pair
    receiver.close()
    wait_for(lambda: not any(p["connected"] for p in sender.peers()))
    array = rng.integers(0, 256, (5, 5, 4), dtype=np.uint8)
    sender.send(array)  # to nobody: no error, nothing waits
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(texstream.Closed, match="no connected peer takes files"):
        sender.send_file(tmp_path / "f")
    with pytest.raises(texstream.Closed):
        receiver.recv(timeout=1)
    with texstream.Receiver(connect=sender.address) as again:
        again.wait_for_peers(timeout=10)
        sender.wait_for_peers(timeout=10)
        sender.send(array)
        assert np.array_equal(again.recv(timeout=10).array, array)


def test_no_frame_in_time_is_a_timeout():
    with texstream.Sender(listen="127.0.0.1:0") as sender:
        with texstream.Receiver(connect=sender.address) as receiver:
            start = time.monotonic()
            with pytest.raises(texstream.Timeout, match="no frame within 0.3 s"):
                receiver.recv(timeout=0.3)
            assert 0.25 < time.monotonic() - start < 3


def test_a_gone_sender_is_a_timeout_that_says_why():
    sender = texstream.Sender(listen="127.0.0.1:0")
    addr = sender.address
    sender.close()
    with texstream.Receiver(connect=addr) as receiver:
        with pytest.raises(texstream.Timeout, match=addr):
            receiver.recv(timeout=1)


@pytest.mark.parametrize("theirs", ["another token", None])
def test_a_refused_token_is_an_auth_error(theirs):
    with texstream.Sender(listen="127.0.0.1:0", token="the token") as sender:
        with texstream.Receiver(connect=sender.address, token=theirs) as receiver:
            with pytest.raises(texstream.AuthError):
                receiver.recv(timeout=10)
        with texstream.Receiver(connect=sender.address, token="the token") as receiver:
            sender.wait_for_peers(timeout=10)
            receiver.wait_for_peers(timeout=10)
            sender.send(np.ones((2, 2, 4), np.uint8))
            assert receiver.recv(timeout=10).array.sum() == 16


def test_waiting_releases_the_gil():
    with texstream.Sender(listen="127.0.0.1:0") as sender:
        with texstream.Receiver(connect=sender.address) as receiver:
            waiting = threading.Thread(
                target=lambda: pytest.raises(texstream.Timeout, receiver.recv, timeout=1.0)
            )
            started = time.monotonic()
            waiting.start()
            time.sleep(0.1)
            # Pure Python work until a set time while the other thread waits in recv:
            # with the GIL held there, this thread would resume only after the whole
            # second, past that time, and count nothing.
            counted, until = 0, started + 0.6
            while time.monotonic() < until:
                counted += 1
            waiting.join(5)
            assert counted > 10_000


def test_a_closed_endpoint_says_so():
    with texstream.Sender(listen="127.0.0.1:0") as sender:
        pass
    assert sender.closed
    with pytest.raises(texstream.Closed, match="closed"):
        sender.send(np.zeros((1, 1, 4), np.uint8))
    with pytest.raises(texstream.Closed):
        sender.send_text("anyone?")
    with texstream.Receiver(connect="127.0.0.1:9") as receiver:
        receiver.close()
        assert list(receiver) == []


def test_a_listen_that_fails_is_an_error():
    with texstream.Sender(listen="127.0.0.1:0") as first:
        with pytest.raises(texstream.Error, match="cannot listen"):
            texstream.Sender(listen=first.address)
