"""railyard/processes.listener names the process behind a port even while that process opens and
closes files: a server's threads do so all the time, and a refusal that named "another program"
instead of the real holder sent users looking for the wrong thing."""

import subprocess
import sys
import textwrap

from railyard.processes import listener

CHURNING_LISTENER = textwrap.dedent(
    """
    import os, socket, sys, threading

    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(200)]
    server = socket.socket()  # its fd comes after those files in the fd table
    server.bind(("127.0.0.1", 0))
    server.listen()

    def churn():  # files below the socket close and open again while another process reads the table
        while True:
            for index, fd in enumerate(files):
                os.close(fd)
                files[index] = os.open(os.devnull, os.O_RDONLY)

    threading.Thread(target=churn, daemon=True).start()
    print(server.getsockname()[1], flush=True)
    sys.stdin.read()
    """
)


def test_the_listener_is_named_while_its_files_come_and_go():
    holder = subprocess.Popen(
        [sys.executable, "-c", CHURNING_LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(holder.stdout.readline())
        found = [listener(port) for _ in range(30)]
        assert [entry and entry["pid"] for entry in found] == [holder.pid] * 30
    finally:
        holder.kill()
        holder.wait()
