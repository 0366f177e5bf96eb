"""custintel: customer intelligence over HTTP.

OpenMP threads (LightGBM's, scikit-learn's) wait for work by sleeping, not spinning
(OMP_WAIT_POLICY=PASSIVE, unless the environment says otherwise). It is read when such a library
is first loaded, so it is set here, before any module of the service loads one. custintel shares
its cores with Postgres, the API and other jobs, and spinning threads took the cores they waited
on: on 2 cores beside a test run, a training of the simulator's 10,000 accounts (23,641 rows)
took 222 s spinning and 43 s sleeping; 22 s on a quiet machine.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
