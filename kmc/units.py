"""Physical constants and unit conversions: the one place each is written down.

Internal units: length Å, energy eV, temperature K, time s, frequency Hz. Reported: D in
cm²/s, conductivity in S/cm; task files store positions in nm (H5MD, MDAnalysis).
"""

from __future__ import annotations

import scipy.constants

#: Boltzmann constant in eV/K (CODATA 2018).
BOLTZMANN_EV = scipy.constants.k / scipy.constants.e
#: Elementary charge in C.
ELEMENTARY_CHARGE = scipy.constants.e
#: Boltzmann constant in J/K.
BOLTZMANN_J = scipy.constants.k
#: 1 Å² = 1e-16 cm² (so Å²/s → cm²/s).
A2_TO_CM2 = 1e-16
#: 1 cm² = 1e-4 m².
CM2_TO_M2 = 1e-4
#: 1 Å⁻³ = 1e30 m⁻³.
PER_A3_TO_PER_M3 = 1e30
#: 1 S/m = 1e-2 S/cm.
S_PER_M_TO_S_PER_CM = 1e-2
#: 1 nm = 10 Å.
ANGSTROM_PER_NM = 10.0
#: Energy (eV) a charge of +1 e gains moving 1 Å along a field of 1 V/cm: 1 V/cm = 1e-8 V/Å.
VOLT_PER_CM_TO_EV_PER_ANGSTROM = 1e-8
#: 1 Å = 1e-8 cm (drift velocities: Å/s → cm/s).
ANGSTROM_TO_CM = 1e-8
#: 1 Å⁻³ = 1e24 cm⁻³.
PER_A3_TO_PER_CM3 = 1e24
