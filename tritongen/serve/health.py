"""Triton's readiness probes, shared by the server's start-up wait and the watchdog."""

import urllib.request


def server_ready(http_url: str, timeout_s: float = 1.0) -> bool:
    """True when `GET http://<http_url>/v2/health/ready` answers 200 (every model is ready)."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def metrics_answering(metrics_url: str, timeout_s: float = 1.0) -> bool:
    """True when `GET http://<metrics_url>/metrics` answers 200. Triton opens its metrics port
    after its HTTP port, so a server whose HTTP endpoint says ready may not serve metrics yet."""
    try:
        with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except OSError:
        return False
