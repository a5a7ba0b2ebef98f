"""Builds the compiled hot path in fastgate/_core/.

FASTGATE_DEBUG=1 builds with line tracing and writes annotated HTML next to
each .pyx (`./build.sh debug`); FASTGATE_CFLAGS adds compiler flags.
"""
import glob
import os

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

extensions = [
    Extension(
        "fastgate._core." + os.path.basename(path)[:-4],
        [path],
        extra_compile_args=CFLAGS,
        define_macros=macros,
    )
    for path in sorted(glob.glob("fastgate/_core/*.pyx"))
    if not ONLY or os.path.basename(path)[:-4] in ONLY
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives, annotate=DEBUG,
                          nthreads=int(os.environ.get("FASTGATE_JOBS", "2"))),
)
