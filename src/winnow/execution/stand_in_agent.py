"""Stands in for one of the two Python agents a Ray node's raylet starts, in an embedded Ray.

Run by path with ``python -S`` (no site-packages, nothing of Winnow or Ray
imported: about 20 ms instead of the agent's ~1 s of CPU on every start)::

    python -S stand_in_agent.py dashboard PORT_FILE... -- RAY'S AGENT COMMAND...
    python -S stand_in_agent.py runtime-env PORT_FILE -- RAY'S AGENT COMMAND...

``PORT_FILE`` names a port file in the node's session folder with ``{node_id}``
where the node's id goes (the driver derives each name from Ray's own
``get_port_filename``). What follows ``--`` is the command Ray built for its
agent; the raylet appends the agent's arguments, of which ``--node-id`` and
``--session-dir`` are read here.

* ``dashboard``: writes -1 ("not in use") to each port file, as Ray's agent
  does when it runs without its optional modules, then waits. An embedded Ray
  without a dashboard exports no metrics and serves no dashboard, so nothing
  ever calls this agent; the raylet only needs the port files and a live
  process (it stops if its agent exits).
* ``runtime-env``: listens on a loopback port and writes it to the port file.
  A Winnow run asks for no runtime environment, so the raylet never connects;
  if something does (a task with a ``runtime_env``), this process becomes
  Ray's real agent on the same port (``exec``): the raylet's request is
  refused once and retried, then served as Ray would serve it, only later.

Either waits for the raylet, its parent, to end: the raylet stops it at
shutdown, and if the raylet is killed this process notices within a second
and exits, as Ray's agents do.
"""

from __future__ import annotations

import os
import select
import socket
import sys

POLL_S = 1.0


def main(argv: list[str]) -> None:
    """Run the stand-in named by ``argv[0]``; see the module's docstring."""
    split = argv.index("--")
    kind, port_files, command = argv[0], argv[1:split], argv[split + 1 :]
    options = dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)
    paths = [
        os.path.join(options["session-dir"], name.format(node_id=options["node-id"]))
        for name in port_files
    ]
    parent = os.getppid()
    if kind == "dashboard":
        for path in paths:
            _persist(path, -1)
        while os.getppid() == parent:
            select.select([], [], [], POLL_S)
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    _persist(paths[0], port)
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], POLL_S)
        if ready:  # wanted after all: become Ray's agent, on this port
            listener.close()
            real = [a for a in command if not a.startswith("--runtime-env-agent-port=")]
            os.execv(real[0], [*real, f"--runtime-env-agent-port={port}"])


def _persist(path: str, port: int) -> None:
    """Write a port file as Ray does: whole or not at all."""
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w") as fh:
        fh.write(str(port))
    os.replace(partial, path)


if __name__ == "__main__":
    main(sys.argv[1:])
