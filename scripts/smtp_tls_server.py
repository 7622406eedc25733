"""An SMTP server for tollgate's tests: STARTTLS required, then LOGIN/PLAIN with one account.

Usage: smtp_tls_server.py HOST PORT MAILDIR CERT KEY USER PASSWORD
Each accepted mail is written into MAILDIR. Runs until killed.
"""

import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

host, port, maildir, cert, key, user, password = sys.argv[1:]

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    # Not `handled`: aiosmtpd then answers 535 itself.
    return AuthResult(success=ok, handled=False)


controller = Controller(
    Mailbox(maildir),
    hostname=host,
    port=int(port),
    tls_context=context,
    require_starttls=True,
    auth_required=True,
    authenticator=authenticate,
)
controller.start()
print(f"SMTP with STARTTLS and login on {host}:{port}", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
