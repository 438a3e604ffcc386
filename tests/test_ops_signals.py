"""Stopping on SIGTERM/SIGINT without taking a lock inside a signal handler: the services'
`wait_for_stop_signal` and the site agent's `set_on_stop_signal`, each in a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPTS = {
    # The site agent's shape: its main thread waits on the Event the signal sets, while another
    # thread keeps taking and releasing that Event's lock.
    "event": """
        import threading
        from ucadi.ops.serving import set_on_stop_signal
        stop = threading.Event()
        set_on_stop_signal(stop)
        def churn():
            while not stop.is_set():
                stop.wait(0.0001)
        threading.Thread(target=churn, daemon=True).start()
        print("ready", flush=True)
        stop.wait()
        print("stopped", flush=True)
    """,
    "wait": """
        from ucadi.ops.serving import wait_for_stop_signal
        print("stopped", wait_for_stop_signal(lambda: print("ready", flush=True)), flush=True)
    """,
}


@pytest.mark.parametrize("helper", sorted(SCRIPTS))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_wait_in_a_real_process(helper: str, sig: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPTS[helper])],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        process.send_signal(sig)
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert out.startswith("stopped")
    if helper == "wait":
        assert out.split()[1] == str(int(sig))
