"""Helpers shared by the benchmark scripts in bench/ (Python 3 stdlib only).

Imported by `filter-throughput` and `daemon-throughput` (which put this
directory on sys.path and disable bytecode writing, so nothing is left in the
repository).  Not a benchmark itself.
"""

import glob
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_cmd(cmd, cwd=None):
    print("+", " ".join(map(str, cmd)), flush=True)
    if subprocess.run(list(map(str, cmd)), cwd=cwd).returncode != 0:
        die(f"command failed: {' '.join(map(str, cmd))}")


def fetch_fail2ban(cache):
    """Return (root, version) of an unpacked fail2ban .deb, fetching it if needed."""
    d = cache / "fail2ban"
    root = d / "root"
    d.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(d / "fail2ban_*.deb")):
        run_cmd(["apt-get", "download", "fail2ban"], cwd=d)
    debs = sorted(glob.glob(str(d / "fail2ban_*.deb")))
    if not debs:
        die(f"no fail2ban_*.deb in {d}")
    if not (root / "usr/bin/fail2ban-regex").exists():
        run_cmd(["dpkg", "-x", Path(debs[-1]).name, "root"], cwd=d)
    return root, Path(debs[-1]).name.split("_")[1]


def fetch_deb_python(cache, package, module):
    """Unpack Debian's python3 PACKAGE (e.g. python3-pyinotify) next to the
    fetched fail2ban, the same way (`apt-get download` + `dpkg -x`), into
    CACHE/fail2ban/PACKAGE.  Return its dist-packages directory, or None if
    it cannot be fetched (the caller decides whether that matters)."""
    d = cache / "fail2ban"
    root = d / package
    dist = root / "usr/lib/python3/dist-packages"
    if (dist / f"{module}.py").exists() or (dist / module).is_dir():
        return dist
    d.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(d / f"{package}_*.deb")):
        print("+ apt-get download", package, flush=True)
        if subprocess.run(["apt-get", "download", package], cwd=d).returncode != 0:
            return None
    debs = sorted(glob.glob(str(d / f"{package}_*.deb")))
    if not debs:
        return None
    print("+ dpkg -x", Path(debs[-1]).name, package, flush=True)
    if subprocess.run(["dpkg", "-x", Path(debs[-1]).name, package], cwd=d).returncode != 0:
        return None
    return dist if dist.is_dir() else None


def fail2ban_python():
    """The interpreter Fail2Ban's tools run under (Debian's, as packaged)."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def fail2ban_env(root, extra_paths=(), **extra):
    """Environment for running the unpacked Fail2Ban from ROOT."""
    paths = [str(root / "usr/lib/python3/dist-packages"), *map(str, extra_paths)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **extra)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            return next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"
