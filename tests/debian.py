"""Programs the tests take from Debian's archive: installed with apt-get when missing.

A test that needs one skips, saying why, only where apt-get cannot run (not
root, or not Debian); a failed install on a machine that has apt-get is a
skip with apt-get's own words, so the note says what was missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def debian_program(program: str, package: str) -> str:
    """The path of ``program``, installing Debian's ``package`` first if it is missing."""
    found = shutil.which(program)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{program} is not installed and apt-get cannot install {package} here (not root, or no apt-get)")
    print(f"\ninstalling Debian's {package} for {program} (apt-get)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        # A fresh machine's package lists may be missing or stale.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    found = shutil.which(program)
    if result.returncode != 0 or not found:
        pytest.skip(f"apt-get could not install {package}: {result.stderr[-500:]}")
    return found
