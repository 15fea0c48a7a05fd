"""Third-party browser files the site and the slides serve themselves (MathJax, reveal.js, ...),
fetched once from the npm registry with ``npm pack`` into ``build/vendor/`` and checked against
the SHA-512 the registry publishes for that exact version. Nothing is committed, and the built
pages load nothing from the network."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

# npm spec -> the registry's published integrity (``npm view <spec> dist.integrity``)
PACKAGES = {
    "mathjax@3.2.2": "Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtR"
                     "ZM1vO+geW0OhGw==",
    "mathjax@2.7.7": "OOl0B2/0tSJAtAZarXnQuLDBLgTNRqiI9VqHTQzPsxf4okT2iIpDrvaklK9x2QEMD1sDj4yR"
                     "n11Ygci41DxMAQ==",
    "reveal.js@4.0.2": "LWZSUenufF1gpD7npxJ7KfoQQFKgc1D6XrLTFgKlwWNP1BQ74hT48KONFWMAw+8R/QUeaScC"
                       "LCLrBVHDfFIEiw==",
    "jquery@3.7.1": "m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADV"
                    "D7CkUUizgkpLfg==",
    "requirejs@2.3.7": "DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVH"
                       "J0pyBkM1z+pDsw==",
}


def package(spec: str, vendor: Path) -> Path:
    """The unpacked ``package/`` directory of an npm ``spec`` listed in ``PACKAGES``."""
    want = PACKAGES[spec]
    home = vendor / spec.replace("@", "-")
    root = home / "package"
    if (home / ".verified").exists():
        return root
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"fetching {spec} needs `npm` once (apt-get install npm), or unpack "
                         f"its npm tarball into {root}")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    packed = subprocess.run([npm, "pack", spec, "--silent"], cwd=home, check=True,
                            capture_output=True, text=True)
    tgz = home / packed.stdout.strip().splitlines()[-1]
    got = base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
    if got != want:
        raise SystemExit(f"{spec}: SHA-512 {got} is not the registry's {want}")
    with tarfile.open(tgz) as tar:
        tar.extractall(home, filter="data")
    tgz.unlink()
    (home / ".verified").touch()
    return root
