"""Build the compiled kMC kernel; all metadata lives in pyproject.toml.

The kernel is split into small units (each .pyx carries its own Cython directives in its
header): _sites (site records), _selection (the lattice gas's event selection), _walkers and
_lattice_gas (one loop each). The RNG (_rng.pxd) and the hot accessors are inline headers,
compiled into every loop that cimports them.
"""

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ("_sites", "_selection", "_walkers", "_lattice_gas")

extensions = [
    Extension(
        f"kmc.{name}",
        [f"kmc/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for name in MODULES
]

setup(ext_modules=cythonize(extensions, language_level=3))
