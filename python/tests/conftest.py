"""Fixtures for the texstream package's tests: the `texstream` binary (TEXSTREAM_BIN,
default target/debug/texstream) run as a child process, stopped after each test."""

import os
import pathlib
import queue
import subprocess
import threading

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def texstream_bin():
    path = pathlib.Path(os.environ.get("TEXSTREAM_BIN", ROOT / "target" / "debug" / "texstream"))
    if not path.is_file():
        pytest.fail(f"no texstream binary at {path}: run `cargo build` or set TEXSTREAM_BIN")
    return str(path)


class Cli:
    """A running `texstream` command: its stdout lines come through a queue."""

    def __init__(self, args, stdin=False):
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "texstream=info,warn"},
        )
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line.rstrip("\n"))

    def line(self, timeout=20):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s; stderr: {self.stderr}") from None

    def listening(self):
        """The address from the `listening on ADDR` line."""
        line = self.line()
        assert line.startswith("listening on "), (line, self.stderr)
        return line.removeprefix("listening on ")

    def say(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; stderr: {self.stderr}") from None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cli(texstream_bin):
    """Starts `texstream ARGS…`; every one started is stopped at the end of the test."""
    started = []

    def start(*args, stdin=False):
        c = Cli([texstream_bin, *map(str, args)], stdin=stdin)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def rng():
    return np.random.default_rng(15)
