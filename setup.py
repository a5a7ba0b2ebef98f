"""Builds the compiled hot path in fastgate/_core/.

FASTGATE_DEBUG=1 builds with line tracing and writes annotated HTML next to
each .pyx (`./build.sh debug`); FASTGATE_CFLAGS adds compiler flags.
"""
import glob
import os
import re
import subprocess
import sys
import tarfile

from Cython.Build import cythonize
from setuptools import Extension, setup

# FASTGATE_MODULES=router,headers builds only those modules (for working on one concept).
ONLY = [m for m in os.environ.get("FASTGATE_MODULES", "").split(",") if m]
DEBUG = os.environ.get("FASTGATE_DEBUG") == "1"
CFLAGS = ["-O2"] + os.environ.get("FASTGATE_CFLAGS", "").split()
directives = {"language_level": "3", "embedsignature": True}
macros = []
if DEBUG:
    directives.update(linetrace=True, profile=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

# http1.pyx compiles llhttp in: the exact one httptools bundles (same bugs, same
# strictness), taken from the sdist of the installed httptools (llhttp and httptools
# are MIT licensed; LICENSE-MIT is copied next to the sources). build/ is git-ignored,
# so a fresh clone fetches it once, from PyPI like every other dependency.
LLHTTP = "build/llhttp"
LLHTTP_FILES = ["include/llhttp.h", "src/api.c", "src/http.c", "src/llhttp.c", "LICENSE-MIT"]
HTTPTOOLS_FALLBACK = "0.9.0"   # when httptools is not installed yet (first `pip install -e .`)


def httptools_version():
    try:
        from importlib.metadata import version
        return version("httptools")
    except Exception:
        return HTTPTOOLS_FALLBACK


def fetch_llhttp():
    ver = httptools_version()
    stamp = os.path.join(LLHTTP, "HTTPTOOLS_VERSION")
    if os.path.exists(stamp) and open(stamp).read().strip() == ver and all(
            os.path.exists(os.path.join(LLHTTP, f)) for f in LLHTTP_FILES):
        return
    dest = "build/llhttp-src"
    sdist = os.path.join(dest, f"httptools-{ver}.tar.gz")
    if not os.path.exists(sdist):
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                               "--no-deps", f"httptools=={ver}", "-d", dest])
    with tarfile.open(sdist) as tar:
        for f in LLHTTP_FILES:
            member = tar.extractfile(f"httptools-{ver}/vendor/llhttp/{f}")
            os.makedirs(os.path.dirname(os.path.join(LLHTTP, f)) or LLHTTP, exist_ok=True)
            with open(os.path.join(LLHTTP, f), "wb") as out:
                out.write(member.read())
    with open(stamp, "w") as out:
        out.write(ver + "\n")


def cimports_http1(path, seen=None):
    """The module at path cimports http1, itself or through a .pxd it cimports (it then
    reads llhttp_t's fields, so it needs llhttp's header too)."""
    seen = set() if seen is None else seen
    for f in (path, path[:-4] + ".pxd"):
        if not os.path.exists(f) or f in seen:
            continue
        seen.add(f)
        text = open(f).read()
        if "fastgate._core.http1 cimport" in text:
            return True
        for dep in re.findall(r"from fastgate\._core\.(\w+) cimport", text):
            if cimports_http1(os.path.join(os.path.dirname(path), dep + ".pxd"), seen):
                return True
    return False


def extension(path):
    name = os.path.basename(path)[:-4]
    sources, include_dirs, cflags = [path], [], CFLAGS
    if name == "http1" or cimports_http1(path):
        # modules that cimport http1 read llhttp_t's fields, so they need its header too
        fetch_llhttp()
        include_dirs.append(f"{LLHTTP}/include")
    if name == "http1":
        sources += [f"{LLHTTP}/src/{c}.c" for c in ("api", "http", "llhttp")]
        # llhttp's symbols stay private to this module (httptools' copy is loaded too)
        cflags = CFLAGS + ["-fvisibility=hidden"]
    return Extension("fastgate._core." + name, sources, include_dirs=include_dirs,
                     extra_compile_args=cflags, define_macros=macros)


extensions = [
    extension(path)
    for path in sorted(glob.glob("fastgate/_core/*.pyx"))
    if not ONLY or os.path.basename(path)[:-4] in ONLY
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives, annotate=DEBUG,
                          nthreads=int(os.environ.get("FASTGATE_JOBS", "2"))),
)
