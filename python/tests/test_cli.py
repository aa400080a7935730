"""The package against the `texstream` command line: frames byte-exact each way, text
and files each way, a refused token."""

import json
import time

import numpy as np
import pytest

import texstream
from pngio import read_png, write_png


def frames(rng, n, shape=(37, 53, 4)):
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def test_python_sender_to_record_is_byte_exact(cli, tmp_path, rng):
    out = tmp_path / "out"
    record = cli("record", "--listen", "127.0.0.1:0", "--out", out, "--frames", 3)
    addr = record.listening()
    sent = frames(rng, 3)
    with texstream.Sender(connect=addr) as sender:
        sender.wait_for_peers(timeout=10)
        for n, array in enumerate(sent, 1):
            sender.send(array)
            # record saves every frame it is handed, but its node keeps only the newest
            # two: one frame at a time, so that none is replaced before it is taken.
            _wait_saved(out, n)
        assert record.wait() == 0, record.stderr
    summary = json.loads(record.line())
    assert summary["frames_saved"] == 3
    assert summary["checksum_failures"] == 0
    for n, array in enumerate(sent, 1):
        got = read_png(out / f"frame-{n:06}.png")
        assert got.shape == array.shape
        assert np.array_equal(got, array), f"frame {n} differs"


def _wait_saved(out, n, timeout=10, ext="png"):
    deadline = time.monotonic() + timeout
    while not (out / f"frame-{n:06}.{ext}").exists():
        assert time.monotonic() < deadline, f"frame {n} was not saved"
        time.sleep(0.01)


#: Each format as Python sends it: (dtype, shape), the file record writes, and what
#: reading that file gives back (uint8: a PNG of the frame's own channels; floats: .npy).
FORMATS = [
    (np.uint8, (37, 53), "png", (37, 53)),
    (np.uint8, (37, 53, 1), "png", (37, 53)),
    (np.uint8, (37, 53, 3), "png", (37, 53, 3)),
    (np.uint8, (37, 53, 4), "png", (37, 53, 4)),
    (np.float32, (37, 53), "npy", (37, 53)),
    (np.float32, (37, 53, 1), "npy", (37, 53)),
    (np.float32, (37, 53, 3), "npy", (37, 53, 3)),
    (np.float32, (37, 53, 4), "npy", (37, 53, 4)),
    (np.float16, (37, 53, 4), "npy", (37, 53, 4)),
]


@pytest.mark.parametrize("dtype,shape,ext,back", FORMATS, ids=lambda v: str(v))
def test_each_format_from_python_is_recorded_byte_exact(cli, tmp_path, rng, dtype, shape, ext,
                                                         back):
    out = tmp_path / "out"
    record = cli("record", "--listen", "127.0.0.1:0", "--out", out, "--frames", 2)
    addr = record.listening()
    if np.dtype(dtype).kind == "u":
        sent = [rng.integers(0, 256, shape, dtype=dtype) for _ in range(2)]
    else:
        sent = [(rng.standard_normal(shape) * 1e3).astype(dtype) for _ in range(2)]
        sent[0].reshape(-1)[:4] = [np.nan, np.inf, -0.0, np.finfo(dtype).smallest_subnormal]
    with texstream.Sender(connect=addr) as sender:
        sender.wait_for_peers(timeout=10)
        for n, array in enumerate(sent, 1):
            sender.send(array)
            _wait_saved(out, n, ext=ext)
        assert record.wait() == 0, record.stderr
    assert json.loads(record.line())["frames_saved"] == 2
    for n, array in enumerate(sent, 1):
        path = out / f"frame-{n:06}.{ext}"
        got = read_png(path) if ext == "png" else np.load(path)
        assert got.shape == back and got.dtype == dtype, (got.shape, got.dtype)
        assert got.tobytes() == array.tobytes(), f"frame {n} differs"


def test_serve_to_python_receiver_is_byte_exact(cli, tmp_path, rng):
    picture = rng.integers(0, 256, (41, 67, 4), dtype=np.uint8)
    write_png(tmp_path / "picture.png", picture)
    serve = cli("serve", tmp_path / "picture.png", "--listen", "127.0.0.1:0", "--fps", 20,
                "--no-announce")
    addr = serve.listening()
    with texstream.Receiver(connect=addr) as receiver:
        seqs = []
        for _ in range(3):
            frame = receiver.recv(timeout=10)
            assert frame.array.dtype == np.uint8
            assert frame.array.shape == (41, 67, 4)
            assert np.array_equal(frame.array, picture)
            assert frame.format == "rgba8"
            assert 0 <= frame.latency < 5
            seqs.append(frame.seq)
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert receiver.stats()["checksum_failures"] == 0


def test_text_and_a_file_from_python_to_record(cli, tmp_path):
    out = tmp_path / "out"
    record = cli("record", "--listen", "127.0.0.1:0", "--out", out, "--seconds", 30)
    addr = record.listening()
    payload = bytes(range(256)) * 4099
    (tmp_path / "weights.bin").write_bytes(payload)
    with texstream.Sender(connect=addr, name="trainer") as sender:
        sender.wait_for_peers(timeout=10)
        sender.send_text("epoch 3: loss 0.25")
        assert sender.send_file(tmp_path / "weights.bin", timeout=20) == 1
    assert (out / "weights.bin").read_bytes() == payload
    record.stop()
    assert "[trainer] epoch 3: loss 0.25" in (out / "chat.log").read_text()


def test_text_and_a_file_from_the_command_line_to_python(cli, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with texstream.Receiver(listen="127.0.0.1:0", files_dir=inbox) as receiver:
        serve = cli("serve", "pattern", "--size", "32x16", "--connect", receiver.address,
                    "--fps", 5, "--no-announce", "--name", "sim", stdin=True)
        receiver.wait_for_peers(timeout=10)
        serve.say("hello from serve")
        texts = receiver.texts(timeout=10)
        assert [(t.sender, t.body) for t in texts] == [("sim", "hello from serve")]

        payload = b"calibration\n" * 5000
        (tmp_path / "calib.txt").write_bytes(payload)
        send = cli("send-file", tmp_path / "calib.txt", "--connect", receiver.address)
        assert send.wait() == 0, send.stderr
        files = receiver.files(timeout=10)
        assert [(f.name, f.size) for f in files] == [("calib.txt", len(payload))]
        assert open(files[0].path, "rb").read() == payload


def test_a_token_record_refuses_is_an_auth_error(cli, tmp_path):
    record = cli("record", "--listen", "127.0.0.1:0", "--out", tmp_path, "--token", "right one",
                 "--seconds", 30)
    addr = record.listening()
    with texstream.Sender(connect=addr, token="wrong one") as sender:
        with pytest.raises(texstream.AuthError, match="authentication failed"):
            sender.wait_for_peers(timeout=10)
    with texstream.Sender(connect=addr, token="right one") as sender:
        peers = sender.wait_for_peers(timeout=10)
        assert [p["authenticated"] for p in peers] == [True]
