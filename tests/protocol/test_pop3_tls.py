"""pop3-handler with TLS: STLS (RFC 2595) on the plain port, --tls for
implicit TLS (port 995), AUTH PLAIN (RFC 5034) only inside TLS."""
import base64
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from harness import main
from pop3_base import PASSWORD, POP3, Closer, Pop3TestCase, Raw, new_message, wire_lines

FAILED = '-ERR [AUTH] Authentication failed'


def make_cert(d):
    cert, key = os.path.join(d, 'cert.pem'), os.path.join(d, 'key.pem')
    r = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                        '-subj', '/CN=mx.test.example', '-days', '2',
                        '-keyout', key, '-out', cert], capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError('openssl req failed: ' + r.stderr.decode(errors='replace'))
    return cert, key


class TlsTestCase(Pop3TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which('openssl'):
            raise unittest.SkipTest('openssl is not installed')
        cls.certdir = tempfile.mkdtemp(prefix='postage-pop3-tls-')
        cls.cert, cls.key = make_cert(cls.certdir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.p.set('tls_cert', self.cert)
        self.p.set('tls_key', self.key)
        self.put(new_message('tls'))

    def context(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False  # CN only, no subjectAltName
        return ctx

    def stls(self, c):
        """STLS on a Raw client, then the handshake; a Raw client over TLS."""
        self.assertEqual(c.cmd('STLS'), '+OK Begin TLS negotiation')
        self.assertEqual(c.buf, b'')
        t = Raw(self.context().wrap_socket(c.sock))
        self.clients.append(t)
        return t


class Stls(TlsTestCase):
    def capa(self, c):
        self.assertTrue(c.cmd('CAPA').startswith('+OK'))
        return [l.decode() for l in c.multi()]

    def test_capa_before_and_after(self):
        c = self.connect()
        before = self.capa(c)
        self.assertIn('STLS', before)
        self.assertNotIn('SASL PLAIN', before)
        self.assertIn('USER', before)
        t = self.stls(c)
        after = self.capa(t)
        self.assertNotIn('STLS', after)
        self.assertIn('SASL PLAIN', after)
        self.assertIn('USER', after)

    def test_poplib_stls(self):
        m = self.poplib(login=False)
        m.stls(self.context())
        m.user('alice')
        m.pass_(PASSWORD)
        self.assertEqual(m.stat()[0], 1)
        self.assertTrue(m.retr(1)[0].startswith(b'+OK'))
        m.quit()
        self.assertTrue(self.log_events(event='login', result='ok', login='alice', tls=1))
        self.assertTrue(self.log_events(event='tls', result='ok'))

    def test_stls_twice_refused(self):
        t = self.stls(self.connect())
        self.assertEqual(t.cmd('STLS'), '-ERR Command not permitted when TLS active')
        self.assertTrue(t.login().startswith('+OK'))
        self.assertTrue(t.cmd('STAT').startswith('+OK 1 '))

    def test_stls_not_in_transaction(self):
        c = self.session()
        self.assertEqual(c.cmd('STLS'), '-ERR STLS is not valid in the TRANSACTION state')

    def test_injection_not_answered_inside_tls(self):
        # CVE-2011-0411 class: a command sent with STLS, before the
        # handshake, must be dropped, not answered inside TLS.
        c = self.connect()
        c.sock.sendall(b'STLS\r\nSTAT\r\n')
        self.assertEqual(c.resp(), '+OK Begin TLS negotiation')
        self.assertEqual(c.buf, b'', 'nothing may follow the STLS reply in clear')
        t = Raw(self.context().wrap_socket(c.sock))
        self.clients.append(t)
        # Had STAT been kept, its "-ERR ... AUTHORIZATION state" would come
        # first; CAPA's answer must be the first line inside TLS.
        t.send('CAPA\r\n')
        first = t.resp()
        self.assertEqual(first, '+OK Capability list follows', 'the pipelined STAT was answered')
        t.multi()
        self.assertTrue(t.cmd('NOOP').startswith('-ERR NOOP is not valid'))

    def test_user_forgotten_after_stls(self):
        c = self.connect()
        self.assertEqual(c.cmd('USER alice'), '+OK Send your password')
        t = self.stls(c)
        self.assertEqual(t.cmd(f'PASS {PASSWORD}'), '-ERR Send USER first')

    def test_handshake_failure_ends_session(self):
        c = self.connect()
        self.assertEqual(c.cmd('STLS'), '+OK Begin TLS negotiation')
        c.send(b'this is not a TLS client hello\r\n' * 4)
        self.assertTrue(c.closed())
        self.assertTrue(self.wait_for(lambda: self.log_events(event='tls', result='handshake_failed')))
        self.assertTrue(self.log_events(event='disconnect', result='tls_failed'))

    def test_auth_plain_refused_in_clear(self):
        c = self.connect()
        cred = base64.b64encode(f'\0alice\0{PASSWORD}'.encode()).decode()
        r = c.cmd(f'AUTH PLAIN {cred}')
        self.assertTrue(r.startswith('-ERR [AUTH]'), r)
        self.assertEqual(self.p.sql('SELECT count(*) FROM pop_logins')[0][0], 0)
        self.assertTrue(c.login().startswith('+OK'), 'USER/PASS stays allowed in clear')

    def test_gnutls_cli_starttls(self):
        if not shutil.which('gnutls-cli'):
            self.skipTest('gnutls-cli is not installed')
        r = subprocess.run(['gnutls-cli', '--starttls-proto=pop3', '--x509cafile', self.cert,
                            '--verify-hostname', 'mx.test.example', '-p', str(self.srv.port),
                            '127.0.0.1'],
                           input=f'USER alice\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n'.encode(),
                           capture_output=True, timeout=60)
        out = r.stdout.decode(errors='replace')
        self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors='replace'))
        self.assertIn('+OK Logged in, 1 message', out)
        self.assertRegex(out, r'\+OK 1 \d+')
        self.assertIn('signing off', out)

    def test_openssl_s_client_starttls(self):
        r = subprocess.run(['openssl', 's_client', '-starttls', 'pop3', '-connect',
                            f'127.0.0.1:{self.srv.port}', '-CAfile', self.cert,
                            '-verify_return_error', '-quiet', '-ign_eof'],
                           input=f'USER alice\r\nPASS {PASSWORD}\r\nUIDL\r\nQUIT\r\n'.encode(),
                           stdin=None, capture_output=True, timeout=60)
        out = r.stdout.decode(errors='replace')
        self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors='replace'))
        self.assertIn('+OK Logged in, 1 message', out)
        self.assertIn('+OK Unique-ID listing follows', out)
        self.assertIn('signing off', out)

    def test_old_tls_versions_refused(self):
        if not shutil.which('gnutls-cli'):
            self.skipTest('gnutls-cli is not installed')
        r = subprocess.run(['gnutls-cli', '--starttls-proto=pop3', '--insecure',
                            '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0',
                            '-p', str(self.srv.port), '127.0.0.1'],
                           input=b'CAPA\r\n', capture_output=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn(b'SASL PLAIN', r.stdout)
        # The server saw the hello and refused it.
        self.assertTrue(self.wait_for(lambda: self.log_events(event='tls', result='handshake_failed')))

    def test_curl_ssl_reqd(self):
        if not shutil.which('curl'):
            self.skipTest('curl is not installed')
        r = subprocess.run(['curl', '-sS', '--ssl-reqd', '--cacert', self.cert, '-k',
                            '-u', f'alice:{PASSWORD}', f'pop3://127.0.0.1:{self.srv.port}/1'],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        data = self.read(self.p.messages('alice')[0])
        self.assertEqual(r.stdout, b''.join(l + b'\r\n' for l in wire_lines(data)))
        # curl used SASL PLAIN once TLS was on.
        self.assertTrue(self.log_events(event='login', result='ok', mech='PLAIN', tls=1))


class ImplicitTls(TlsTestCase):
    server_args = ('--tls',)

    def tls_connect(self):
        s = self.context().wrap_socket(self.srv.connect())
        c = Raw(s)
        self.clients.append(c)
        self.assertEqual(c.resp(), '+OK mx.test.example POP3 ready')
        return c

    def test_pop3_ssl(self):
        import poplib
        m = poplib.POP3_SSL(self.srv.host, self.srv.port, context=self.context(), timeout=30)
        self.clients.append(Closer(m))
        capa = m.capa()
        self.assertNotIn('STLS', capa)
        self.assertIn('SASL', capa)
        self.assertEqual(capa['SASL'], ['PLAIN'])
        m.user('alice')
        m.pass_(PASSWORD)
        _, lines, _ = m.retr(1)
        self.assertEqual(lines, wire_lines(self.read(self.p.messages('alice')[0])))
        m.dele(1)
        m.quit()
        self.assertEqual(self.p.messages('alice'), [])

    def test_stls_refused_when_implicit(self):
        c = self.tls_connect()
        self.assertEqual(c.cmd('STLS'), '-ERR Command not permitted when TLS active')

    def test_auth_plain(self):
        c = self.tls_connect()
        good = base64.b64encode(f'\0alice\0{PASSWORD}'.encode()).decode()
        bad = base64.b64encode(b'\0alice\0wrong').decode()
        other = base64.b64encode(f'bob\0alice\0{PASSWORD}'.encode()).decode()
        self.assertEqual(c.cmd('AUTH CRAM-MD5'), '-ERR Unsupported authentication mechanism')
        self.assertEqual(c.cmd(f'AUTH PLAIN {bad}'), FAILED)
        self.assertEqual(c.cmd(f'AUTH PLAIN {other}'), FAILED)
        self.assertEqual(c.cmd('AUTH PLAIN'), '+ ')
        self.assertEqual(c.cmd('*'), '-ERR Authentication cancelled')
        self.assertEqual(c.cmd('AUTH PLAIN'), '+ ')
        self.assertEqual(c.cmd('not base64!'), '-ERR Invalid base64 data')
        # Two failures so far; the third would hang up. Log in now.
        self.assertEqual(c.cmd('AUTH PLAIN'), '+ ')
        r = c.cmd(good)
        self.assertTrue(r.startswith('+OK Logged in'), r)
        self.assertTrue(c.cmd('STAT').startswith('+OK 1 '))
        self.assertEqual(self.p.sql('SELECT login FROM pop_logins'), [('alice',)])

    def test_auth_plain_initial_response_and_authzid(self):
        c = self.tls_connect()
        cred = base64.b64encode(f'alice\0alice\0{PASSWORD}'.encode()).decode()
        r = c.cmd(f'AUTH PLAIN {cred}')
        self.assertTrue(r.startswith('+OK Logged in'), r)

    def test_auth_listing(self):
        c = self.tls_connect()
        self.assertEqual(c.cmd('AUTH'), '+OK')
        self.assertEqual(c.multi(), [b'PLAIN'])

    def test_curl_pop3s(self):
        if not shutil.which('curl'):
            self.skipTest('curl is not installed')
        r = subprocess.run(['curl', '-sS', '--cacert', self.cert, '-k', '-u', f'alice:{PASSWORD}',
                            f'pop3s://127.0.0.1:{self.srv.port}/'],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.decode(), r'^1 \d+\r\n$')

    def test_plain_text_client_dropped(self):
        c = Raw(self.srv.connect())
        self.clients.append(c)
        c.send('USER alice\r\n')
        self.assertTrue(c.closed())
        self.assertTrue(self.wait_for(lambda: self.log_events(event='disconnect', result='tls_failed')))


class ImplicitTlsWithoutCertificate(Pop3TestCase):
    server_args = ('--tls',)

    def test_refuses_with_log_line(self):
        c = Raw(self.srv.connect())
        self.clients.append(c)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b'')
        self.assertTrue(self.wait_for(lambda: self.log_events(event='tls', result='unavailable')))

    def test_no_stls_offered_on_plain(self):
        srv = self.p.serve(POP3)
        c = self.connect(srv=srv)
        self.assertTrue(c.cmd('CAPA').startswith('+OK'))
        self.assertNotIn(b'STLS', c.multi())
        self.assertEqual(c.cmd('STLS'), '-ERR TLS is not available')


if __name__ == '__main__':
    main()
