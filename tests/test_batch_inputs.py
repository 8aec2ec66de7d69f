"""Issue 22, reproductions 8 and 9: a batch's size options are checked, and its query file
is read with bounds (an endless input ends in a clear error, SIGTERM still works)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from llmpopcorn.core.errors import ConfigError, InputError
from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.batch import read_queries, run_batch

CLI = "from llmpopcorn.cli import main; main()"


@pytest.fixture
def queries(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("a corgi learns to surf\n# a comment\n\nan otter naps\n")
    return path


@pytest.mark.parametrize(
    "args, words",
    [
        (["-k", "99999999"], "-k/--concurrency must be between 1 and 256"),
        (["-k", "40000"], "-k/--concurrency must be between 1 and 256"),
        (["-k", "0"], "-k/--concurrency must be between 1 and 256"),
        (["--variants", "-1"], "--variants must be between 1 and 50"),
        (["--variants", "0"], "--variants must be between 1 and 50"),
        (["--variants", "1000000"], "--variants must be between 1 and 50"),
        (["--render-slots", "0"], "--render-slots must be between 1 and 64"),
        (["--render-slots", "-1"], "--render-slots must be between 1 and 64"),
    ],
)
def test_batch_options_out_of_range_are_errors(queries, tmp_path, args, words):
    from llmpopcorn.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", str(queries), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "hint:" in result.output
    assert "Traceback" not in result.output and "report it" not in result.output
    assert not out.exists()  # refused before anything was made


def test_run_batch_checks_its_limits_first(tmp_path):
    settings = Settings(out_dir=tmp_path / "out", render=False, score=False)
    for kw in ({"concurrency": 257}, {"variants": 0}, {"variants": 51}, {"render_slots": 0}):
        with pytest.raises(ConfigError, match="must be between"):
            run_batch(["a corgi"], settings, **kw)
    assert not (tmp_path / "out").exists()


def test_query_files_are_read_with_bounds(tmp_path):
    long_line = tmp_path / "long.txt"
    long_line.write_bytes(b"x" * 20_000 + b"\n")
    with pytest.raises(InputError, match="line 1: longer than 8,002 bytes"):
        read_queries(long_line)
    many = tmp_path / "many.txt"
    many.write_text("a corgi\n" * 10_001)
    with pytest.raises(InputError, match="more than 10000 queries"):
        read_queries(many)
    comments = tmp_path / "comments.txt"
    comments.write_text("# note\n" * 100_001 + "a corgi\n")
    with pytest.raises(InputError, match="more than 100,000 lines"):
        read_queries(comments)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a corgi\n\xff\xfe otter\n")
    with pytest.raises(InputError, match="line 2 is not UTF-8"):
        read_queries(bad)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"\xef\xbb\xbfa corgi\r\n# skip\r\n  an otter  \r\n")
    assert read_queries(crlf) == ["a corgi", "an otter"]
    with pytest.raises(InputError, match="is a folder"):
        read_queries(tmp_path)


def _bounded_read(path: str) -> subprocess.CompletedProcess:
    """read_queries(path) in a child limited to 1 GiB of memory and 60 s."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from llmpopcorn.runs.batch import read_queries\n"
        "from llmpopcorn.core.errors import InputError\n"
        "try:\n"
        "    read_queries(sys.argv[1])\n"
        "except InputError as exc:\n"
        "    print('InputError:', exc.message)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60
    )


def test_an_endless_file_ends_in_a_clear_error():
    done = _bounded_read("/dev/zero")
    assert done.returncode == 0, done.stderr[-500:]
    assert "InputError: /dev/zero, line 1: longer than" in done.stdout


def test_a_pipe_that_never_closes_ends_in_a_clear_error(tmp_path):
    fifo = tmp_path / "queries.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer():  # a query a line, forever, never closing the pipe
        try:
            with open(fifo, "wb") as pipe:
                while not stop.is_set():
                    pipe.write(b"a corgi learns to surf\n" * 1000)
        except (BrokenPipeError, OSError):
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        done = _bounded_read(str(fifo))
    finally:
        stop.set()
    assert "holds more than 10000 queries" in done.stdout, done.stderr[-500:]
    thread.join(10)


def test_sigterm_stops_a_batch_waiting_on_its_query_pipe(tmp_path):
    """The reader blocks on a pipe that sends nothing; SIGTERM ends it with 143."""
    fifo = tmp_path / "queries.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "batch", str(fifo), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = _open_when_read(fifo, proc)  # the batch has opened the pipe and waits on it
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.close(writer)
    assert proc.returncode == 143, err[-500:]
    assert "interrupted by SIGTERM" in err


def _open_when_read(fifo, proc) -> int:
    """The pipe's write end, opened once the child has opened its read end (polled: an
    open without a reader fails at once with ENXIO)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        assert proc.poll() is None, proc.stderr.read()[-500:]
        assert time.monotonic() < deadline, "the batch never opened its query pipe"
        time.sleep(0.02)
