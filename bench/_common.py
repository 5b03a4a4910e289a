"""Helpers the scripts in ``bench/`` share (imported as ``_common``: a script's own folder is
first on ``sys.path``)."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fmt_bytes(x: float) -> str:
    """``1536`` -> ``"1.50 KiB"``: binary units up to GiB, whole bytes below 1 KiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(x) < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.2f} {unit}"
        x /= 1024
    return str(x)


def child_env(cpu_devices: int | None = None) -> dict[str, str]:
    """This process's environment for a child that imports this checkout; with ``cpu_devices``
    it also sees that many simulated CPU devices (XLA reads the flag when JAX starts, so only a
    fresh process can have them)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    if cpu_devices is not None:
        flag = f"--xla_force_host_platform_device_count={cpu_devices}"
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=flag)
    return env


def status_kib(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``; Linux), or ``None`` where
    there is none (another OS, an exited process)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
