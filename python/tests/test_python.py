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


BAD = {
    "non-contiguous": lambda: np.zeros((16, 32, 4), np.uint8)[:, ::2],
    "float32": lambda: np.zeros((16, 16, 4), np.float32),
    "uint16": lambda: np.zeros((16, 16, 4), np.uint16),
    "3 channels": lambda: np.zeros((16, 16, 3), np.uint8),
    "5-D": lambda: np.zeros((1, 1, 16, 16, 4), np.uint8),
    "2-D": lambda: np.zeros((16, 16), np.uint8),
    "empty": lambda: np.zeros((0, 16, 4), np.uint8),
    "too wide": lambda: np.zeros((1, 16385, 4), np.uint8),
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
