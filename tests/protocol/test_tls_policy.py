"""The TLS that auditors check (issue 18), on every way into TLS: STARTTLS
on 587, STLS on 110, implicit TLS on 465 and 995.

- The default tls_priority offers only forward-secret AEAD suites: no
  static RSA key exchange, no CBC, with an RSA and with a P-256 ECDSA
  certificate; and the server, not the client, picks among them.
- A client-initiated renegotiation (TLS 1.2; 1.3 has none) is refused:
  the server answers the ClientHello with a no_renegotiation warning
  (RFC 5246 7.2.2) and does not handshake. The session goes on, as the
  RFC leaves it to the client whether to continue (a GnuTLS client that
  accepts the refusal carries on; OpenSSL's gives up); a second attempt
  in one session ends it.

test_testssl.py has testssl.sh judge the same ports; this file checks the
same things directly, in seconds."""
import ctypes
import ctypes.util
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Postage  # noqa: E402
from smtp_base import insecure_context, make_cert  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'

# (name, program, arguments, how TLS starts)
ENTRIES = (
    ('465', SMTP, ['--mode=submissions'], 'implicit'),
    ('587', SMTP, ['--mode=submission'], 'smtp'),
    ('995', POP3, ['--tls'], 'implicit'),
    ('110', POP3, [], 'pop3'),
)

# OpenSSL names of TLS 1.2 suites, by certificate kind.
REFUSED = {
    'rsa': ['AES128-SHA', 'AES256-SHA256', 'AES128-GCM-SHA256', 'AES256-GCM-SHA384',
            'ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA384', 'DHE-RSA-AES128-SHA'],
    'ec': ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA', 'ECDHE-ECDSA-AES256-SHA384'],
}
# DHE-RSA with AEAD stays on offer, but GnuTLS (with no DH parameters
# set) does DHE only with a client that lists RFC 7919 groups, which
# OpenSSL's does not: so it is not tried here.
ACCEPTED = {
    'rsa': ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384',
            'ECDHE-RSA-CHACHA20-POLY1305'],
    'ec': ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
           'ECDHE-ECDSA-CHACHA20-POLY1305'],
}


def read_reply(sock, pop3):
    """One SMTP reply (all its lines) or one POP3 status line, as text,
    read a byte at a time so nothing of the TLS handshake is consumed."""
    data = b''
    while True:
        c = sock.recv(1)
        if not c:
            raise EOFError(f'connection closed after {data!r}')
        data += c
        if data.endswith(b'\n'):
            last = data[:-1].rsplit(b'\n', 1)[-1]
            if pop3 or last[3:4] != b'-':
                return data.decode(errors='replace')


def plain_to_tls(sock, how):
    """The clear-text dialog that precedes the handshake."""
    if how == 'implicit':
        return
    pop3 = how == 'pop3'
    greeting = read_reply(sock, pop3)
    if pop3:
        assert greeting.startswith('+OK'), greeting
        sock.sendall(b'STLS\r\n')
        r = read_reply(sock, pop3)
        assert r.startswith('+OK'), r
    else:
        assert greeting.startswith('220'), greeting
        sock.sendall(b'EHLO client.test\r\n')
        r = read_reply(sock, pop3)
        assert 'STARTTLS' in r, r
        sock.sendall(b'STARTTLS\r\n')
        r = read_reply(sock, pop3)
        assert r.startswith('220'), r


class GnuTLSClient:
    """Just enough of GnuTLS, through ctypes, to do what no Python module
    does: renegotiate as a TLS 1.2 client."""
    CLIENT = 2
    CRD_CERTIFICATE = 1
    E_WARNING_ALERT_RECEIVED = -16
    E_AGAIN = -28
    A_NO_RENEGOTIATION = 100

    def __init__(self, sock):
        name = ctypes.util.find_library('gnutls') or 'libgnutls.so.30'
        try:
            self.g = g = ctypes.CDLL(name)
        except OSError as e:
            raise unittest.SkipTest(f'cannot load GnuTLS for the client: {e}')
        g.gnutls_strerror.restype = ctypes.c_char_p
        self.sock = sock
        # Blocking, with a kernel timeout, since GnuTLS reads the fd itself.
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack('ll', 20, 0))
        self.check(g.gnutls_global_init(), 'gnutls_global_init')
        self.cred = ctypes.c_void_p()
        self.check(g.gnutls_certificate_allocate_credentials(ctypes.byref(self.cred)), 'credentials')
        self.session = ctypes.c_void_p()
        self.check(g.gnutls_init(ctypes.byref(self.session), self.CLIENT), 'gnutls_init')
        self.check(g.gnutls_priority_set_direct(self.session, b'NORMAL:-VERS-ALL:+VERS-TLS1.2',
                                                None), 'priority')
        self.check(g.gnutls_credentials_set(self.session, self.CRD_CERTIFICATE, self.cred),
                   'credentials_set')
        g.gnutls_transport_set_int2(self.session, sock.fileno(), sock.fileno())
        self.buf = b''

    def check(self, r, what):
        if r < 0:
            raise AssertionError(f'{what}: {self.error(r)}')
        return r

    def error(self, r):
        return self.g.gnutls_strerror(r).decode()

    def handshake(self):
        """gnutls_handshake(): the first one, or a renegotiation. Returns
        GnuTLS's code (0 or negative)."""
        return self.g.gnutls_handshake(self.session)

    def alert(self):
        return self.g.gnutls_alert_get(self.session)

    def send(self, data, check=True):
        r = self.g.gnutls_record_send(self.session, data, len(data))
        if check:
            self.check(r, 'send')

    def line(self):
        """One line, or None when the server ends the session."""
        while b'\n' not in self.buf:
            chunk = ctypes.create_string_buffer(4096)
            n = self.g.gnutls_record_recv(self.session, chunk, 4096)
            if n == self.E_AGAIN:
                raise AssertionError('no answer from the server within 20 s')
            if n <= 0:
                return None
            self.buf += chunk.raw[:n]
        line, self.buf = self.buf.split(b'\n', 1)
        return line.decode(errors='replace') + '\n'

    def close(self):
        self.g.gnutls_deinit(self.session)
        self.g.gnutls_certificate_free_credentials(self.cred)


class TlsPolicyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which('openssl'):
            raise unittest.SkipTest('openssl is not installed')
        cls.p = Postage().__enter__()
        try:
            cls.certs = {kind: make_cert(cls.p.dir, name=kind, kind=kind)
                         for kind in ('rsa', 'ec')}
            cls.use('rsa')
            cls.servers = {name: cls.p.serve(prog, args) for name, prog, args, _ in ENTRIES}
        except BaseException:
            cls.p.__exit__(None, None, None)
            raise
        cls.how = {name: how for name, _, _, how in ENTRIES}

    @classmethod
    def tearDownClass(cls):
        cls.p.finish()

    @classmethod
    def use(cls, kind):
        cert, key = cls.certs[kind]
        cls.p.set('tls_cert', cert)
        cls.p.set('tls_key', key)

    def tearDown(self):
        self.use('rsa')
        self.p.sql("DELETE FROM settings WHERE key = 'tls_priority'")

    # -- helpers ---------------------------------------------------------

    def connect(self, name):
        srv = self.servers[name]
        sock = socket.create_connection((srv.host, srv.port), timeout=20)
        self.addCleanup(sock.close)
        plain_to_tls(sock, self.how[name])
        return sock

    def tls12(self, name, ciphers):
        """A TLS 1.2 handshake offering only ciphers (OpenSSL names, in
        the client's order of preference); the ssl socket, or the SSLError."""
        ctx = insecure_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        # SECLEVEL 0: the client would take anything; what is refused is
        # refused by the server.
        ctx.set_ciphers(ciphers + ':@SECLEVEL=0')
        sock = self.connect(name)
        try:
            tls = ctx.wrap_socket(sock, server_hostname='mx.test.example')
        except (ssl.SSLError, ConnectionError) as e:
            return e
        self.addCleanup(tls.close)
        return tls

    # -- suites ------------------------------------------------------------

    def check_suites(self, kind):
        self.use(kind)
        for name in self.servers:
            for suite in REFUSED[kind]:
                with self.subTest(port=name, cert=kind, suite=suite):
                    got = self.tls12(name, suite)
                    self.assertIsInstance(got, Exception,
                                          f'{suite} accepted on {name} with an {kind} certificate')
            for suite in ACCEPTED[kind]:
                with self.subTest(port=name, cert=kind, suite=suite):
                    got = self.tls12(name, suite)
                    self.assertNotIsInstance(got, Exception, f'{suite} refused on {name}: {got}')
                    self.assertEqual(got.cipher()[0], suite)

    def test_rsa_certificate_only_forward_secret_aead(self):
        self.check_suites('rsa')

    def test_ecdsa_certificate_only_forward_secret_aead(self):
        self.check_suites('ec')

    def test_tls13_unchanged(self):
        for name in self.servers:
            with self.subTest(port=name):
                ctx = insecure_context(minimum_version=ssl.TLSVersion.TLSv1_3)
                tls = ctx.wrap_socket(self.connect(name), server_hostname='mx.test.example')
                self.addCleanup(tls.close)
                self.assertEqual(tls.version(), 'TLSv1.3')

    def test_admin_priority_still_rules(self):
        """Control: the refusals above come from the default, which an
        administrator's tls_priority replaces."""
        self.p.set('tls_priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2')
        got = self.tls12('465', 'AES128-SHA')
        self.assertNotIsInstance(got, Exception, f'tls_priority setting ignored: {got}')
        self.assertEqual(got.cipher()[0], 'AES128-SHA')

    def test_server_chooses_the_suite(self):
        """The server's order, not the client's (testssl.sh: "Has server
        cipher order?"): whichever the client lists first, it gets the
        same suite."""
        a, b = 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384'
        for name in self.servers:
            with self.subTest(port=name):
                first = self.tls12(name, f'{a}:{b}')
                second = self.tls12(name, f'{b}:{a}')
                for got in (first, second):
                    self.assertNotIsInstance(got, Exception, str(got))
                self.assertEqual(first.cipher()[0], second.cipher()[0],
                                 f'on {name} the client chose the suite')

    # -- renegotiation -------------------------------------------------------

    def test_openssl_renegotiation_refused(self):
        """openssl s_client's R (what testssl.sh does): the server answers
        with a no_renegotiation warning and no ServerHello."""
        for name in self.servers:
            with self.subTest(port=name):
                srv = self.servers[name]
                cmd = ['openssl', 's_client', '-msg', '-tls1_2', '-connect',
                       f'{srv.host}:{srv.port}', '-servername', 'mx.test.example']
                if self.how[name] != 'implicit':
                    cmd += ['-starttls', self.how[name]]
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
                # R once the handshake is done; stdin stays open so that
                # s_client does not quit before the server has answered.
                time.sleep(1.0)
                proc.stdin.write(b'R\n')
                proc.stdin.flush()
                try:
                    out, _ = proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                text = out.decode(errors='replace')
                self.assertIn('RENEGOTIATING', text)
                after = text.split('RENEGOTIATING', 1)[1]
                self.assertIn('Alert [length 0002], warning no_renegotiation', after,
                              f'no no_renegotiation warning on {name}:\n{after[-2000:]}')
                self.assertNotIn('ServerHello', after, f'renegotiated on {name}')
        self.assertIn('event=tls result=renegotiation_refused count=1', self.p.log_text())

    def test_session_goes_on_after_refusal(self):
        """A GnuTLS client asks to renegotiate, is refused, and goes on
        with the session; its second attempt ends the session."""
        for name in self.servers:
            with self.subTest(port=name):
                sock = self.connect(name)
                c = GnuTLSClient(sock)
                self.addCleanup(c.close)
                r = c.handshake()
                self.assertEqual(r, 0, c.error(r))
                pop3 = self.servers[name].program == POP3
                if self.how[name] == 'implicit':
                    greeting = c.line()
                    self.assertTrue(greeting and greeting[:3] in ('220', '+OK'), greeting)
                r = c.handshake()
                self.assertEqual(r, GnuTLSClient.E_WARNING_ALERT_RECEIVED,
                                 f'renegotiation on {name}: {c.error(r)}')
                self.assertEqual(c.alert(), GnuTLSClient.A_NO_RENEGOTIATION)
                # Still the same session: a command is answered.
                c.send(b'NOOP\r\n')
                reply = c.line()
                want = '-ERR ' if pop3 else '250 '
                self.assertTrue(reply and reply.startswith(want),
                                f'after the refusal on {name}: {reply!r}')
                # Asked again: the server ends the session.
                c.handshake()
                c.send(b'NOOP\r\n', check=False)
                self.assertIsNone(c.line(), f'{name}: session went on after a second attempt')
        self.assertTrue(all(s.wait_handlers() for s in self.servers.values()))
        self.assertIn('event=tls result=renegotiation_refused count=2', self.p.log_text())


if __name__ == '__main__':
    harness.main()
