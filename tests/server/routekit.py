"""The route tests use when they release devices for reasons other than cycles: "acetabular cup" (the test
plant's family) needs no cycle steps. Tests of release evidence use another family, which gets the default
route (cleaning and sterilization cycles)."""

import json

ROUTES_WITHOUT_CYCLES = {"acetabular cup": {}}
ROUTES_ENV = {"AMTRACE_ROUTES": json.dumps(ROUTES_WITHOUT_CYCLES)}
