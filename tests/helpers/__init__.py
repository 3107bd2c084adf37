"""What the tests share: scripted LMs (`scripted`), the loopback model server (`loopback`), tiny
local models (`local_tiny`, `sg_tiny`), Solution Guidance scripts (`sg`), and the paths below.

    from helpers import FIXTURES, free_port
    from helpers.scripted import scripted_lm
    from helpers.loopback import LoopbackServer
"""

from __future__ import annotations

import socket
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
