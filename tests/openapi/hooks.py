"""Checks of tollgate's own for schemathesis: no verification code in any answer.

The test serving the API passes the codes of the requests it parked in TOLLGATE_CODES.
"""

import os

import schemathesis

CODES = [c for c in os.environ.get("TOLLGATE_CODES", "").split(",") if c]


@schemathesis.check
def no_verification_code(ctx, response, case):
    """A code reaches only the approver it was sent to: no answer ever carries one."""
    text = response.content.decode("utf-8", "replace")
    sent = str(case.path_parameters) + str(case.query) + str(case.body)
    for code in CODES:
        if code in text and code not in sent:
            raise AssertionError(f"a verification code is in the answer to {case.method} {case.path}")
