"""TLS in smtp-handler (issue 5): STARTTLS (RFC 3207) on --mode=mx and
--mode=submission, implicit TLS (RFC 8314) on --mode=submissions, with
Python's ssl, gnutls-cli, openssl s_client, swaks and curl.

Checks the injection defence (CVE-2011-0411), the state reset after
STARTTLS, TLS 1.2+ only, certificate replacement without restart, session
resumption across handler processes (the ticket key in the database), the
Received header, and what happens without a certificate."""
import hashlib
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import unittest
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Postage  # noqa: E402
from smtp_base import Lines, TlsTestCase, insecure_context, make_cert  # noqa: E402

HANDLER = 'smtp-handler/smtp-handler'
PASSWORD = 'correct horse battery'


def der_fingerprint(pem_path):
    with open(pem_path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def run(cmd, input=b'', timeout=60):
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)


class TLSTest(TlsTestCase):
    PASSWORD = PASSWORD
    SMTP_SERVERS = {'mx': 'mx', 'sub': 'submission', 'subs': 'submissions'}

    def tearDown(self):
        # Tests that change the certificate put the original back.
        self.p.set('tls_cert', self.cert)
        self.p.set('tls_key', self.key)
        self.p.sql("DELETE FROM settings WHERE key = 'tls_priority'")

    # -- helpers ---------------------------------------------------------

    def plain(self, srv, source=None):
        sock = socket.create_connection((srv.host, srv.port), timeout=20,
                                        source_address=(source, 0) if source else None)
        self.addCleanup(sock.close)
        c = Lines(sock)
        code, lines = c.reply()
        self.assertEqual(code, 220, lines)
        return c

    def starttls(self, srv, ctx=None, session=None):
        """EHLO, STARTTLS and the handshake; returns (Lines over TLS, ssl socket)."""
        c = self.plain(srv)
        code, lines = c.cmd('EHLO client.test')
        self.assertEqual(code, 250)
        self.assertIn('250-STARTTLS', lines)
        code, lines = c.cmd('STARTTLS')
        self.assertEqual(code, 220, lines)
        ctx = ctx or insecure_context()
        tls = ctx.wrap_socket(c.sock, server_hostname='mx.test.example', session=session)
        self.addCleanup(tls.close)
        return Lines(tls), tls

    def implicit(self, srv, ctx=None, session=None):
        sock = socket.create_connection((srv.host, srv.port), timeout=20)
        self.addCleanup(sock.close)
        ctx = ctx or insecure_context()
        tls = ctx.wrap_socket(sock, server_hostname='mx.test.example', session=session)
        self.addCleanup(tls.close)
        c = Lines(tls)
        code, lines = c.reply()
        self.assertEqual(code, 220, lines)
        return c, tls

    def newest_message(self, login):
        msgs = self.p.messages(login)
        self.assertTrue(msgs, 'no message delivered to ' + login)
        return max(msgs, key=os.path.getmtime)

    # -- STARTTLS and implicit TLS with Python ------------------------------

    def test_smtplib_starttls_on_mx_and_submission(self):
        for srv, mode in ((self.mx, 'mx'), (self.sub, 'submission')):
            with self.subTest(mode=mode):
                s = srv.smtp()
                s.ehlo('client.test')
                self.assertTrue(s.has_extn('starttls'), s.esmtp_features)
                if mode == 'submission':
                    self.assertFalse(s.has_extn('auth'), 'AUTH offered before TLS on 587')
                code, _ = s.starttls(context=insecure_context())
                self.assertEqual(code, 220)
                self.assertIn(s.sock.version(), ('TLSv1.3', 'TLSv1.2'))
                s.ehlo('client.test')
                self.assertFalse(s.has_extn('starttls'), 'STARTTLS offered again inside TLS')
                if mode == 'submission':
                    self.assertIn('PLAIN', s.esmtp_features.get('auth', ''))
                self.assertEqual(s.noop()[0], 250)
                s.quit()

    def test_smtp_ssl_on_submissions(self):
        s = smtplib.SMTP_SSL(self.subs.host, self.subs.port, timeout=20,
                             context=insecure_context())
        self.assertIn(s.sock.version(), ('TLSv1.3', 'TLSv1.2'))
        s.ehlo('client.test')
        self.assertFalse(s.has_extn('starttls'), 'STARTTLS offered on implicit TLS')
        self.assertIn('LOGIN', s.esmtp_features.get('auth', ''))
        s.login('alice', PASSWORD)
        s.sendmail('alice@example.test', ['alice@example.test'],
                   b'Subject: over 465\r\n\r\nimplicit tls\r\n')
        s.quit()
        with open(self.newest_message('alice')) as f:
            head = f.read()
        self.assertIn('Subject: over 465', head)
        self.assertRegex(head, r'\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)')
        self.assertIn('with ESMTPSA', head)

    def test_implicit_and_starttls_under_xinetd(self):
        subs = self.p.serve(HANDLER, ['--mode=submissions'], supervisor='xinetd')
        s = smtplib.SMTP_SSL(subs.host, subs.port, timeout=20, context=insecure_context())
        self.addCleanup(s.close)
        self.assertIn(s.sock.version(), ('TLSv1.3', 'TLSv1.2'))
        s.login('alice', PASSWORD)
        s.quit()
        sub = self.p.serve(HANDLER, ['--mode=submission'], supervisor='xinetd')
        s = smtplib.SMTP(sub.host, sub.port, timeout=20)
        self.addCleanup(s.close)
        s.starttls(context=insecure_context())
        s.login('alice', PASSWORD)
        s.quit()
        subs.stop()
        sub.stop()

    # -- real clients -----------------------------------------------------

    def assert_tls_dialog(self, r, protocol):
        """The client r (CompletedProcess) ended well, says it spoke
        protocol (a regex), and the EHLO and QUIT replies came."""
        out = r.stdout.decode(errors='replace')
        self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors='replace'))
        self.assertRegex(out, protocol)
        self.assertIn('250-mx.test.example', out)
        self.assertIn('221 2.0.0 Bye', out)

    def test_gnutls_cli_starttls(self):
        if not shutil.which('gnutls-cli'):
            self.skipTest('gnutls-cli not installed')
        r = run(['gnutls-cli', '--insecure', '--starttls-proto=smtp', '--port',
                 str(self.mx.port), self.mx.host],
                input=b'EHLO gnutls.test\r\nQUIT\r\n')
        self.assert_tls_dialog(r, r'Description: \(TLS1\.[23]-')

    def test_openssl_s_client_starttls(self):
        r = run(['openssl', 's_client', '-starttls', 'smtp', '-connect',
                 f'{self.mx.host}:{self.mx.port}', '-servername', 'mx.test.example',
                 '-ign_eof'], input=b'EHLO openssl.test\r\nQUIT\r\n')
        self.assert_tls_dialog(r, r'Protocol *: TLSv1\.[23]|New, TLSv1\.[23]')

    def test_openssl_s_client_implicit(self):
        r = run(['openssl', 's_client', '-connect', f'{self.subs.host}:{self.subs.port}',
                 '-ign_eof'], input=b'EHLO openssl.test\r\nQUIT\r\n')
        out = r.stdout.decode(errors='replace')
        self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors='replace'))
        self.assertIn('220 mx.test.example ESMTP', out)
        self.assertIn('250-AUTH PLAIN LOGIN', out)

    def test_swaks_tls_and_received_header(self):
        if not shutil.which('swaks'):
            self.skipTest('swaks not installed')
        before = set(self.p.messages('alice'))
        r = run(['swaks', '--server', f'{self.mx.host}:{self.mx.port}', '--tls',
                 '--from', 'someone@elsewhere.example', '--to', 'alice@example.test',
                 '--helo', 'swaks.test', '--header', 'Subject: swaks tls'])
        out = r.stdout.decode(errors='replace')
        self.assertEqual(r.returncode, 0, out)
        self.assertIn('<-  220 2.0.0 Ready to start TLS', out)
        self.assertIn('=== TLS started with cipher TLSv1.3', out)
        new = set(self.p.messages('alice')) - before
        self.assertEqual(len(new), 1, out)
        with open(new.pop()) as f:
            head = f.read()
        self.assertIn('Subject: swaks tls', head)
        # Postfix's wording, which log analysers know.
        self.assertRegex(head, r'\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+ \(\d+/\d+ bits\)\)')
        self.assertIn('with ESMTPS', head)
        self.assertRegex(self.p.log_text(), r'event=tls result=ok tls="TLSv1\.3 with cipher')

    def test_curl_starttls_and_smtps(self):
        if not shutil.which('curl'):
            self.skipTest('curl not installed')
        msg = os.path.join(self.p.dir, 'curl-msg.txt')
        with open(msg, 'wb') as f:
            f.write(b'Subject: via curl\r\n\r\nhello\r\n')
        before = set(self.p.messages('alice'))
        r = run(['curl', '-sS', '--ssl-reqd', '-k', '--max-time', '30',
                 f'smtp://{self.mx.host}:{self.mx.port}/curl.test',
                 '--mail-from', 'x@elsewhere.example', '--mail-rcpt', 'alice@example.test',
                 '-T', msg])
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors='replace'))
        r = run(['curl', '-sS', '-k', '--max-time', '30',
                 f'smtps://{self.subs.host}:{self.subs.port}/curl.test',
                 '--user', 'alice:' + PASSWORD,
                 '--mail-from', 'alice@example.test', '--mail-rcpt', 'alice@example.test',
                 '-T', msg])
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors='replace'))
        new = set(self.p.messages('alice')) - before
        self.assertEqual(len(new), 2)
        for path in new:
            with open(path) as f:
                self.assertIn('using TLSv1.', f.read())

    def test_curl_ssl_reqd_fails_without_starttls(self):
        """Control for the test above: curl --ssl-reqd really insists."""
        with Postage() as p:
            srv = p.serve(HANDLER, ['--mode=mx'])
            r = run(['curl', '-sS', '--ssl-reqd', '-k', '--max-time', '30',
                     f'smtp://{srv.host}:{srv.port}/curl.test',
                     '--mail-from', 'x@elsewhere.example', '--mail-rcpt', 'a@example.test',
                     '-T', '/dev/null'])
            self.assertNotEqual(r.returncode, 0)
            p.check_sanitizers()

    # -- the STARTTLS state machine ------------------------------------------

    def test_pipelined_command_after_starttls_is_discarded(self):
        """CVE-2011-0411: a command sent in the same packet as STARTTLS
        must not be executed inside TLS."""
        c = self.plain(self.mx)
        self.assertEqual(c.cmd('EHLO client.test')[0], 250)
        c.send(b'STARTTLS\r\nRSET\r\n')
        code, lines = c.reply()
        self.assertEqual(code, 220, lines)
        self.assertEqual(c.buf, b'', 'server answered the pipelined RSET in clear')
        tls = insecure_context().wrap_socket(c.sock, server_hostname='mx.test.example')
        self.addCleanup(tls.close)
        t = Lines(tls)
        tls.settimeout(1.0)
        try:
            data = tls.recv(4096)
        except (socket.timeout, TimeoutError):
            data = None
        self.assertIsNone(data, 'server sent %r inside TLS before any command' % (data,))
        tls.settimeout(20)
        code, lines = t.cmd('EHLO client.test')
        self.assertEqual(code, 250)
        self.assertEqual(lines[0], '250-mx.test.example', lines)
        self.assertEqual(t.cmd('QUIT')[0], 221)

    def test_starttls_twice_refused(self):
        t, _ = self.starttls(self.mx)
        self.assertEqual(t.cmd('EHLO client.test')[0], 250)
        code, lines = t.cmd('STARTTLS')
        self.assertEqual(code, 503, lines)
        self.assertEqual(t.cmd('NOOP')[0], 250, 'session should go on')
        t.cmd('QUIT')

    def test_ehlo_forgotten_after_starttls(self):
        t, _ = self.starttls(self.mx)
        code, lines = t.cmd('MAIL FROM:<x@elsewhere.example>')
        self.assertEqual(code, 503, lines)
        self.assertEqual(t.cmd('EHLO client.test')[0], 250)
        self.assertEqual(t.cmd('MAIL FROM:<x@elsewhere.example>')[0], 250)
        t.cmd('QUIT')

    def test_transaction_forgotten_after_starttls(self):
        # HELO (not EHLO), MAIL, then STARTTLS: the sender must be gone.
        c = self.plain(self.mx)
        self.assertEqual(c.cmd('EHLO client.test')[0], 250)
        self.assertEqual(c.cmd('MAIL FROM:<x@elsewhere.example>')[0], 250)
        self.assertEqual(c.cmd('STARTTLS')[0], 220)
        tls = insecure_context().wrap_socket(c.sock, server_hostname='mx.test.example')
        self.addCleanup(tls.close)
        t = Lines(tls)
        self.assertEqual(t.cmd('EHLO client.test')[0], 250)
        code, lines = t.cmd('RCPT TO:<alice@example.test>')
        self.assertEqual(code, 503, lines)
        t.cmd('QUIT')

    def test_handshake_garbage_ends_session_with_log_line(self):
        c = self.plain(self.mx)
        self.assertEqual(c.cmd('EHLO client.test')[0], 250)
        self.assertEqual(c.cmd('STARTTLS')[0], 220)
        c.send(b'this is not a TLS ClientHello\r\n' * 4)
        c.sock.settimeout(20)
        rest = b''
        while True:
            try:
                chunk = c.sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            rest += chunk
        self.assertNotIn(b'250', rest)
        self.assertTrue(self.mx.wait_handlers())
        self.assertIn('event=tls result=handshake_failed', self.p.log_text())

    def test_plain_client_on_465_ends_with_log_line(self):
        c = socket.create_connection((self.subs.host, self.subs.port), timeout=20)
        self.addCleanup(c.close)
        c.sendall(b'EHLO plain.test\r\n')
        data = b''
        while True:
            try:
                chunk = c.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        self.assertNotIn(b'220 ', data)
        self.assertNotIn(b'250', data)
        self.assertTrue(self.subs.wait_handlers())
        log = self.p.log_text()
        self.assertIn('event=tls result=handshake_failed', log)
        self.assertIn('event=disconnect result=tls_failed', log)

    # -- protocol versions --------------------------------------------------

    def tls11_context(self):
        ctx = insecure_context()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers('DEFAULT:@SECLEVEL=0')
        except (ValueError, ssl.SSLError) as e:
            self.skipTest(f'this Python/OpenSSL cannot speak TLS 1.1: {e}')
        return ctx

    def test_tls11_only_client_refused(self):
        ctx = self.tls11_context()
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            c, tls = self.implicit(self.subs, ctx=ctx)
            self.fail('TLS 1.1 accepted: ' + tls.version())
        # Control: the same client does get in when the admin allows 1.1,
        # so the refusal above is the server's.
        self.p.set('tls_priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.2:+VERS-TLS1.1')
        try:
            c, tls = self.implicit(self.subs, ctx=ctx)
        except ssl.SSLError as e:
            self.skipTest(f'TLS 1.1 not possible here even when allowed: {e}')
        self.assertEqual(tls.version(), 'TLSv1.1')
        c.cmd('QUIT')

    def test_gnutls_cli_tls11_refused(self):
        if not shutil.which('gnutls-cli'):
            self.skipTest('gnutls-cli not installed')
        cmd = ['gnutls-cli', '--insecure', '--starttls-proto=smtp',
               '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0',
               '--port', str(self.mx.port), self.mx.host]
        r = run(cmd, input=b'QUIT\r\n')
        out = (r.stdout + r.stderr).decode(errors='replace')
        self.assertNotEqual(r.returncode, 0, out)
        self.assertNotRegex(out, r'Description: \(TLS1\.[01]\)')
        self.assertRegex(out, r'(?i)handshake.*fail|protocol version|Fatal error', out)

    def test_tls12_still_accepted(self):
        ctx = insecure_context(minimum_version=ssl.TLSVersion.TLSv1_2,
                               maximum_version=ssl.TLSVersion.TLSv1_2)
        c, tls = self.implicit(self.subs, ctx=ctx)
        self.assertEqual(tls.version(), 'TLSv1.2')
        c.cmd('QUIT')

    @unittest.skipUnless(shutil.which('sslscan'), 'sslscan not installed')
    def test_sslscan_465(self):
        r = run(['sslscan', '--no-colour', '--no-heartbleed', '--no-compression',
                 '--no-renegotiation', '--no-fallback', '--no-check-certificate',
                 f'{self.subs.host}:{self.subs.port}'], timeout=110)
        out = r.stdout.decode(errors='replace')
        self.assertEqual(r.returncode, 0, out)
        for proto in ('SSLv2', 'SSLv3', 'TLSv1.0', 'TLSv1.1'):
            # sslscan prints "<proto>   disabled" (or "not enabled").
            self.assertRegex(out, rf'{proto}\s+(disabled|not enabled)', out)
        self.assertRegex(out, r'TLSv1\.2\s+enabled', out)
        self.assertRegex(out, r'TLSv1\.3\s+enabled', out)
        self.assertNotRegex(out, r'Accepted\s+(SSLv3|TLSv1\.0|TLSv1\.1)\b', out)

    # -- certificate replacement and resumption ------------------------------

    def test_certificate_replaced_between_connections(self):
        c, tls = self.implicit(self.subs)
        first = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        self.assertEqual(first, der_fingerprint(self.cert))
        c.cmd('QUIT')
        # The admin renews in place (as certbot's deploy does): same paths.
        live = os.path.join(self.p.dir, 'live')
        os.makedirs(live, exist_ok=True)
        cert, key = make_cert(live, 'v1', cn='mx.test.example')
        self.p.set('tls_cert', cert)
        self.p.set('tls_key', key)
        c, tls = self.implicit(self.subs)
        got = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        self.assertEqual(got, der_fingerprint(cert))
        c.cmd('QUIT')
        new_cert, new_key = make_cert(live, 'v2', cn='renewed.test.example')
        os.rename(new_key, key)
        os.rename(new_cert, cert)
        c, tls = self.implicit(self.subs)
        second = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        self.assertEqual(second, der_fingerprint(cert))
        self.assertNotEqual(second, got)
        c.cmd('QUIT')

    def session_of(self, connect):
        """Connects, talks (so a TLS 1.3 ticket arrives), returns the ssl session."""
        ctx = insecure_context()
        c, tls = connect(ctx)
        self.assertEqual(c.cmd('EHLO client.test')[0], 250)
        self.assertEqual(c.cmd('NOOP')[0], 250)
        sess = tls.session
        self.assertFalse(tls.session_reused)
        c.cmd('QUIT')
        return ctx, sess

    def test_resumption_implicit_tls(self):
        ctx, sess = self.session_of(lambda ctx: self.implicit(self.subs, ctx=ctx))
        self.assertTrue(sess is not None and sess.has_ticket, 'no session ticket was issued')
        c, tls = self.implicit(self.subs, ctx=ctx, session=sess)
        self.assertTrue(tls.session_reused, 'second connection did not resume')
        c.cmd('QUIT')
        self.assertTrue(self.subs.wait_handlers())
        self.assertIn('resumed=1', self.p.log_text())
        self.assertGreaterEqual(self.p.sql('SELECT count(*) FROM tls_ticket_keys')[0][0], 1)

    def test_resumption_starttls_across_listeners(self):
        # Issued by a 587 process, used at a 25 process: one key for all.
        ctx, sess = self.session_of(lambda ctx: self.starttls(self.sub, ctx=ctx))
        t, tls = self.starttls(self.mx, ctx=ctx, session=sess)
        self.assertTrue(tls.session_reused, 'STARTTLS session did not resume')
        self.assertEqual(t.cmd('EHLO client.test')[0], 250)
        t.cmd('QUIT')

    def test_gnutls_cli_resume(self):
        if not shutil.which('gnutls-cli'):
            self.skipTest('gnutls-cli not installed')
        r = run(['gnutls-cli', '--insecure', '--resume', '--port', str(self.subs.port),
                 self.subs.host], input=b'QUIT\r\n')
        out = (r.stdout + r.stderr).decode(errors='replace')
        self.assertIn('This is a resumed session', out)

    def test_ticket_key_shared_not_regenerated(self):
        self.p.sql('DELETE FROM tls_ticket_keys')
        c, _ = self.implicit(self.subs)
        c.cmd('QUIT')
        self.assertTrue(self.subs.wait_handlers())
        keys = self.p.sql('SELECT created_at, key FROM tls_ticket_keys')
        c, _ = self.implicit(self.subs)
        c.cmd('QUIT')
        self.assertTrue(self.subs.wait_handlers())
        self.assertEqual(self.p.sql('SELECT created_at, key FROM tls_ticket_keys'), keys)
        self.assertEqual(len(keys), 1)

    def test_stale_ticket_key_rotated(self):
        # A key older than a day is no longer used for new tickets.
        self.p.sql('DELETE FROM tls_ticket_keys')
        old = int(time.time()) - 86400 - 60
        self.p.sql('INSERT INTO tls_ticket_keys VALUES (?, ?)', old, b'\x01' * 64)
        c, _ = self.implicit(self.subs)
        c.cmd('QUIT')
        self.assertTrue(self.subs.wait_handlers())
        rows = self.p.sql('SELECT created_at FROM tls_ticket_keys ORDER BY created_at')
        self.assertEqual(len(rows), 2, rows)
        self.assertEqual(rows[0][0], old)
        self.assertGreater(rows[1][0], old + 86400)


class NoCertificateTest(unittest.TestCase):
    def test_nothing_tls_offered(self):
        with Postage() as p:
            p.set('tls_cert', os.path.join(p.dir, 'missing.crt'))  # unreadable: same as unset
            mx = p.serve(HANDLER, ['--mode=mx'])
            s = mx.smtp()
            s.ehlo('client.test')
            self.assertFalse(s.has_extn('starttls'), s.esmtp_features)
            code, msg = s.docmd('STARTTLS')
            self.assertEqual(code // 100, 5, msg)
            self.assertEqual(s.noop()[0], 250)
            s.quit()

            subs = p.serve(HANDLER, ['--mode=submissions'])
            sock = socket.create_connection((subs.host, subs.port), timeout=20)
            data = b''
            while True:
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            sock.close()
            self.assertEqual(data, b'', 'submissions without a certificate sent %r' % data)
            self.assertTrue(subs.wait_handlers())
            log = p.log_text()
            self.assertIn('event=tls result=unavailable', log)
            self.assertIn('tls_cert and tls_key must be set', log)
            self.assertIn('event=disconnect result=tls_failed', log)
            p.check_sanitizers()

    def test_bad_certificate_file_logged(self):
        with Postage() as p:
            bad = os.path.join(p.dir, 'bad.pem')
            with open(bad, 'w') as f:
                f.write('not a certificate\n')
            p.set('tls_cert', bad)
            p.set('tls_key', bad)
            subs = p.serve(HANDLER, ['--mode=submissions'])
            with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                sock = socket.create_connection((subs.host, subs.port), timeout=20)
                insecure_context().wrap_socket(sock).recv(10)
            self.assertTrue(subs.wait_handlers())
            self.assertIn('result=bad_certificate', p.log_text())
            # On 587 STARTTLS is refused before the handshake is promised,
            # and the session goes on in clear.
            sub = p.serve(HANDLER, ['--mode=submission'])
            s = sub.smtp()
            self.addCleanup(s.close)
            s.ehlo('client.test')
            code, msg = s.docmd('STARTTLS')
            self.assertEqual(code, 454, msg)
            self.assertTrue(msg.startswith(b'4.7.0'), msg)
            self.assertEqual(s.noop()[0], 250)
            s.quit()
            p.check_sanitizers()


if __name__ == '__main__':
    harness.main()
