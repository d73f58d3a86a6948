"""One server, many customers, a hostile internet (issue 19): what a
customer of a shared host and an outsider try, and must not get.

- A login's mail carries only that login's names: every From:, Sender:
  and Resent-From: address in a hosted domain must be the login's own or
  granted by send_as (after AUTH; under POP-before-SMTP when the message
  goes out), else 553 5.7.1 naming the address, never the login; signed
  only after that check.
- An SRS address takes bounces (MAIL FROM:<>) only.
- The login throttle: a success does not clear failures; parallel
  attempts never get more than 20 password checks per address; every
  failed login takes at least auth_failure_delay_ms.
- Errors end a session (10 fast, then 1 s each, 421 at 20); address
  harvesting across sessions is held off per address (harvest_limit).
- Our users' lines over 998 octets are broken before signing; an
  outsider's mail through a forward with a forged sender of ours is
  SRS-rewritten.
"""
import base64
import concurrent.futures
import email
import email.policy
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from smtp_base import Lines, TlsTestCase, insecure_context  # noqa: E402
from test_auth import plain  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'
PASSWORD = 'Tenant-pw-0x5eed'


def openssl(*args):
    return subprocess.run(['openssl'] + list(args), capture_output=True, check=True).stdout


class TenantCase(TlsTestCase):
    PASSWORD = PASSWORD
    LOGINS = ('alice', 'bob', 'carol', 'dave')

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        p = cls.p
        # third.test: hosted here, belongs to carol, has a DKIM key.
        p.add_domain('third.test')
        p.add_address('ceo@third.test', 'carol')
        cls.keydir = tempfile.mkdtemp(prefix='postage-tenant-keys-')
        os.chmod(cls.keydir, 0o755)
        key = os.path.join(cls.keydir, 'third.pem')
        openssl('genpkey', '-algorithm', 'ed25519', '-out', key)
        os.chmod(key, 0o644)
        p.sql("INSERT INTO dkim_keys (domain, selector, algorithm, private_key_path) "
              "VALUES ('third.test', 's1', 'ed25519-sha256', ?)", key)
        p.set('auth_failure_delay_ms', '0')
        cls.sub = p.serve(SMTP, ['--mode=submission'])
        cls.mx = p.serve(SMTP, ['--mode=mx'])
        cls.pop = p.serve(POP3)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.keydir, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        for table in ('send_as', 'auth_failures', 'harvest', 'pop_logins', 'relay_networks'):
            self.p.sql(f'DELETE FROM {table}')
        self.p.set('auth_failure_delay_ms', '0')
        self.p.set('harvest_limit', '50')

    # -- helpers ----------------------------------------------------------

    def raw(self, srv=None, source='127.0.0.1', tls=None):
        srv = srv or self.sub
        tls = (srv is self.sub) if tls is None else tls
        sock = socket.create_connection((srv.host, srv.port), timeout=30,
                                        source_address=(source, 0))
        self.addCleanup(sock.close)
        return self.greeted(sock, tls)[0]

    def logged_in(self, login='bob'):
        c = self.raw()
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain(login, PASSWORD))[0], 235)
        return c

    def data(self, c, sender, rcpts, headers, body='hello\n'):
        """MAIL, RCPT, DATA; returns the reply to the end of data."""
        self.assertEqual(c.cmd(f'MAIL FROM:<{sender}>')[0], 250)
        for r in rcpts:
            code, lines = c.cmd(f'RCPT TO:<{r}>')
            self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd('DATA')[0], 354)
        text = headers + '\n' + body
        c.sock.sendall(text.replace('\n', '\r\n').encode() + b'.\r\n')
        return c.reply()

    def queued(self, rcpt):
        rows = self.p.sql('SELECT m.id FROM queue_recipients r JOIN queue_messages m '
                          'ON m.id = r.message_id WHERE r.recipient = ?', rcpt)
        out = []
        for (qid,) in rows:
            with open(os.path.join(self.p.spool_dir, 'queue', qid), 'rb') as f:
                out.append(f.read())
        return out

    def pop_login(self, source, login='alice'):
        import poplib

        class POP3From(poplib.POP3):
            def _create_socket(self, timeout):
                return socket.create_connection((self.host, self.port), timeout,
                                                source_address=(source, 0))
        c = POP3From(self.pop.host, self.pop.port, timeout=30)
        c.stls(context=insecure_context())
        c.user(login)
        c.pass_(PASSWORD)
        c.quit()


class IdentityTest(TenantCase):
    """A customer's mail carries only that customer's name."""

    def test_from_of_another_customers_hosted_domain_is_refused(self):
        c = self.logged_in('bob')
        code, lines = self.data(c, 'bob@example.test', ['x1@remote.example'],
                                'From: CEO <ceo@third.test>\nSubject: wire the money\n')
        self.assertEqual(code, 553, lines)
        self.assertTrue(lines[0].startswith('553 5.7.1 <ceo@third.test>'), lines)
        self.assertNotIn('bob', lines[0])
        self.assertEqual(self.queued('x1@remote.example'), [], 'queued (and signed) anyway')
        # The session goes on: the same login's own From is fine.
        code, lines = self.data(c, 'bob@example.test', ['x2@remote.example'],
                                'From: Bob <bob@example.test>\nSubject: ok\n')
        self.assertEqual(code, 250, lines)
        self.assertEqual(len(self.queued('x2@remote.example')), 1)

    def test_sender_and_resent_from_and_every_author_are_checked(self):
        cases = [
            'From: bob@example.test\nSender: ceo@third.test\n',
            'From: bob@example.test\nResent-From: ceo@third.test\n',
            'From: bob@example.test, ceo@third.test\n',
            'From: "bob@example.test" <ceo@third.test>\n',
            'From: bob@example.test\nFrom: ceo@third.test\n',
            'From: friends: bob@example.test, CEO@THIRD.TEST;\n',
        ]
        for i, headers in enumerate(cases):
            with self.subTest(headers=headers):
                c = self.logged_in('bob')
                rcpt = f'authors{i}@remote.example'
                code, lines = self.data(c, 'bob@example.test', [rcpt], headers + 'Subject: x\n')
                self.assertEqual(code, 553, lines)
                self.assertIn('ceo@third.test', lines[0].lower())
                self.assertEqual(self.queued(rcpt), [])

    def test_unreadable_from_is_refused(self):
        c = self.logged_in('bob')
        code, lines = self.data(c, 'bob@example.test', ['unread@remote.example'],
                                'From: <ceo@third.test\nSubject: x\n')
        self.assertEqual(code, 553, lines)
        self.assertEqual(self.queued('unread@remote.example'), [])

    def test_foreign_domain_may_stand_in_from_and_is_not_signed(self):
        c = self.logged_in('bob')
        code, lines = self.data(c, 'bob@example.test', ['foreign@remote.example'],
                                'From: Bob <bob.private@gmail.example>\nSubject: x\n')
        self.assertEqual(code, 250, lines)
        copy, = self.queued('foreign@remote.example')
        self.assertNotIn(b'DKIM-Signature', copy)

    def test_send_as_grants_an_address_or_a_whole_domain(self):
        for i, grant in enumerate(('ceo@third.test', 'CEO@third.test', '@third.test')):
            with self.subTest(grant=grant):
                self.p.sql('DELETE FROM send_as')
                self.p.sql('INSERT INTO send_as (login, address) VALUES (?, ?)', 'bob', grant)
                rcpt = f'granted{i}@remote.example'
                c = self.logged_in('bob')
                code, lines = self.data(c, 'bob@example.test', [rcpt],
                                        'From: CEO <ceo@third.test>\nSubject: x\n')
                self.assertEqual(code, 250, lines)
                copy, = self.queued(rcpt)
                # Signed by the From: domain, after the check passed.
                self.assertRegex(copy, rb'DKIM-Signature: [^\n]*d=third\.test')
        # A grant is one login's: alice still may not.
        c = self.logged_in('alice')
        code, lines = self.data(c, 'alice@example.test', ['notalice@remote.example'],
                                'From: ceo@third.test\nSubject: x\n')
        self.assertEqual(code, 553, lines)

    def test_send_as_also_grants_the_envelope_sender(self):
        c = self.logged_in('bob')
        code, lines = c.cmd('MAIL FROM:<ceo@third.test>')
        self.assertEqual(code, 553, lines)
        self.assertNotIn('bob', lines[0])
        self.p.sql('INSERT INTO send_as (login, address) VALUES (?, ?)', 'bob', '@third.test')
        self.assertEqual(c.cmd('MAIL FROM:<ceo@third.test>')[0], 250)

    def test_pop_before_smtp_is_bound_to_that_login_and_never_names_it(self):
        ip = '127.0.0.71'
        self.pop_login(ip, 'alice')
        c = self.raw(self.mx, source=ip, tls=False)
        # The envelope: not alice's -> refused at the remote RCPT, no login named.
        self.assertEqual(c.cmd('MAIL FROM:<x@elsewhere.example>')[0], 250)
        code, lines = c.cmd('RCPT TO:<friend@remote.example>')
        self.assertEqual(code, 553, lines)
        self.assertNotIn('alice', lines[0])
        self.assertEqual(c.cmd('RSET')[0], 250)
        # The header: alice's envelope, carol's From -> refused at the end of data.
        code, lines = self.data(c, 'alice@example.test', ['pbs@remote.example'],
                                'From: CEO <ceo@third.test>\nSubject: x\n')
        self.assertEqual(code, 553, lines)
        self.assertNotIn('alice', lines[0])
        self.assertEqual(self.queued('pbs@remote.example'), [])
        # Mail to our own users needs no right and is not bound.
        code, lines = self.data(c, 'alice@example.test', ['carol@example.test'],
                                'From: CEO <ceo@third.test>\nSubject: local\n')
        self.assertEqual(code, 250, lines)

    def test_relay_networks_client_is_not_bound(self):
        self.p.add_relay_network('127.0.0.72/32')
        c = self.raw(self.mx, source='127.0.0.72', tls=False)
        code, lines = self.data(c, 'webapp@third.test', ['trusted@remote.example'],
                                'From: Shop <ceo@third.test>\nSubject: your order\n')
        self.assertEqual(code, 250, lines)


class SrsTest(TenantCase):

    def srs_address(self):
        """An SRS address our forwarding made, read from the queue."""
        self.p.add_forward('fwd@example.test', 'target@victim.example')
        self.addCleanup(self.p.sql, "DELETE FROM forwards WHERE address = 'fwd@example.test'")
        c = self.raw(self.mx, source='127.0.0.80', tls=False)
        code, lines = self.data(c, 'someone@outside.example', ['fwd@example.test'],
                                'From: someone@outside.example\nSubject: x\n')
        self.assertEqual(code, 250, lines)
        rows = self.p.sql("SELECT m.sender FROM queue_messages m JOIN queue_recipients r ON "
                          "r.message_id = m.id WHERE r.recipient = 'target@victim.example'")
        sender = rows[-1][0]
        self.assertTrue(sender.startswith('SRS0='), sender)
        return sender

    def test_srs_address_takes_only_the_null_sender(self):
        srs = self.srs_address()
        before = len(self.p.sql("SELECT 1 FROM queue_recipients WHERE recipient = 'someone@outside.example'"))
        c = self.raw(self.mx, source='127.0.0.81', tls=False)
        self.assertEqual(c.cmd('MAIL FROM:<spammer@evil.example>')[0], 250)
        code, lines = c.cmd(f'RCPT TO:<{srs}>')
        self.assertEqual(code, 550, lines)
        self.assertTrue(lines[0].startswith('550 5.7.1'), lines)
        # A forged one gets the same answer: no oracle for the hash.
        forged = 'SRS0=AAAA' + srs[9:]
        self.assertEqual(c.cmd(f'RCPT TO:<{forged}>')[0], 550)
        self.assertEqual(c.cmd('RSET')[0], 250)
        # A bounce is what it is for.
        self.assertEqual(c.cmd('MAIL FROM:<>')[0], 250)
        self.assertEqual(c.cmd(f'RCPT TO:<{srs}>')[0], 250)
        after = len(self.p.sql("SELECT 1 FROM queue_recipients WHERE recipient = 'someone@outside.example'"))
        self.assertEqual(after, before)

    def test_forged_sender_of_ours_through_a_forward_is_rewritten(self):
        self.p.add_forward('fwd2@example.test', 'target2@victim.example')
        c = self.raw(self.mx, source='127.0.0.82', tls=False)
        code, lines = self.data(c, 'alice@example.test', ['fwd2@example.test'],
                                'From: alice@example.test\nSubject: forged\n')
        self.assertEqual(code, 250, lines)
        (sender,), = self.p.sql("SELECT m.sender FROM queue_messages m JOIN queue_recipients r ON "
                               "r.message_id = m.id WHERE r.recipient = 'target2@victim.example'")
        self.assertTrue(sender.startswith('SRS0=') and sender.endswith('@example.test'), sender)
        self.assertIn('=example.test=alice@', sender)
        # Our own user, logged in, keeps her address (SPF passes as it is).
        c = self.logged_in('alice')
        code, lines = self.data(c, 'alice@example.test', ['fwd2@example.test'],
                                'From: alice@example.test\nSubject: real\n')
        self.assertEqual(code, 250, lines)
        senders = [r[0] for r in self.p.sql(
            "SELECT m.sender FROM queue_messages m JOIN queue_recipients r ON "
            "r.message_id = m.id WHERE r.recipient = 'target2@victim.example'")]
        self.assertIn('alice@example.test', senders)


class ThrottleTest(TenantCase):

    def attempt(self, login, password, source):
        c = self.raw(source=source)
        code, _ = c.cmd('AUTH PLAIN ' + plain(login, password))
        return code

    def failures(self, ip):
        rows = self.p.sql('SELECT failures FROM auth_failures WHERE ip_key = ?', ip)
        return rows[0][0] if rows else 0

    def test_a_good_login_does_not_reset_the_guesses(self):
        ip = '127.0.0.90'
        codes = []
        for _round in range(5):
            for _ in range(5):
                codes.append(self.attempt('alice', 'guess', ip))
            codes.append(self.attempt('bob', PASSWORD, ip))
        wrong_checked = [c for c in codes if c == 535]
        self.assertLessEqual(len(wrong_checked), 20, codes)
        self.assertIn(421, codes, 'never throttled')
        self.assertEqual(self.failures(ip), 20)

    def test_parallel_attempts_never_get_more_than_twenty_checks(self):
        ip = '127.0.0.91'

        def one(_):
            try:
                return self.attempt('alice', 'parallel-guess', ip)
            except (OSError, EOFError):
                return None
        with concurrent.futures.ThreadPoolExecutor(max_workers=40) as ex:
            codes = list(ex.map(one, range(40)))
        checked = codes.count(535)
        self.assertLessEqual(checked, 20, codes)
        self.assertEqual(checked + codes.count(421), 40, codes)
        self.assertEqual(self.failures(ip), 20)

    def test_every_failed_login_takes_the_floor(self):
        self.p.set('auth_failure_delay_ms', '500')
        for login, password in (('nobody', 'x'), ('alice', 'wrong')):
            with self.subTest(login=login):
                c = self.raw(source='127.0.0.92')
                t0 = time.monotonic()
                code, _ = c.cmd('AUTH PLAIN ' + plain(login, password))
                took = time.monotonic() - t0
                self.assertEqual(code, 535)
                self.assertGreaterEqual(took, 0.5)
        c = self.raw(source='127.0.0.93')
        t0 = time.monotonic()
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)
        self.assertLess(time.monotonic() - t0, 0.5, 'a right password waited for the floor')


class ErrorLimitTest(TenantCase):

    def test_twenty_errors_end_the_session_and_after_ten_each_waits(self):
        c = self.raw(self.mx, source='127.0.0.100', tls=False)
        self.assertEqual(c.cmd('MAIL FROM:<probe@outside.example>')[0], 250)
        times = []
        for i in range(19):
            t0 = time.monotonic()
            code, lines = c.cmd(f'RCPT TO:<relay{i}@remote.example>')
            times.append(time.monotonic() - t0)
            self.assertEqual(code, 554, lines)
        self.assertTrue(all(t < 0.9 for t in times[:10]), times)
        self.assertTrue(all(t >= 0.9 for t in times[10:]), times)
        code, lines = c.cmd('RCPT TO:<relay19@remote.example>')
        self.assertEqual(code, 554)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith('421 4.7.0'), lines)
        self.assertTrue(c.closed())

    def test_auth_before_tls_and_unknown_users_count_too(self):
        # 538 (no AUTH before TLS) is an error reply like any other.
        c = self.raw(self.sub, source='127.0.0.101', tls=False)
        for i in range(20):
            code, lines = c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))
            self.assertEqual(code, 538, (i, lines))
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(c.closed())

    def test_a_delivered_message_resets_the_count(self):
        c = self.raw(self.mx, source='127.0.0.102', tls=False)
        for _ in range(3):
            self.assertEqual(c.cmd('MAIL FROM:<x@outside.example>')[0], 250)
            for i in range(8):
                self.assertEqual(c.cmd(f'RCPT TO:<nobody{i}@example.test>')[0], 550)
            self.assertEqual(c.cmd('RCPT TO:<alice@example.test>')[0], 250)
            self.assertEqual(c.cmd('DATA')[0], 354)
            c.sock.sendall(b'Subject: x\r\n\r\nx\r\n.\r\n')
            self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd('QUIT')[0], 221)


class HarvestTest(TenantCase):

    def probe(self, source, rcpt):
        c = self.raw(self.mx, source=source, tls=False)
        self.assertEqual(c.cmd('MAIL FROM:<h@outside.example>')[0], 250)
        return c.cmd(f'RCPT TO:<{rcpt}>')

    def test_dictionary_attack_over_sessions_is_held_off(self):
        self.p.set('harvest_limit', '6')
        ip = '127.0.0.110'
        early = self.raw(self.mx, source=ip, tls=False)
        self.assertEqual(early.cmd('MAIL FROM:<h@outside.example>')[0], 250)
        for i in range(6):
            code, lines = self.probe(ip, f'guess{i}@example.test')
            self.assertEqual(code, 550, lines)
        # Now even a real address gets 450 at RCPT in a session that
        # was already open...
        code, lines = early.cmd('RCPT TO:<alice@example.test>')
        self.assertEqual(code, 450, lines)
        self.assertTrue(lines[0].startswith('450 4.7.1'), lines)
        # ... and a new connection 421 at once.
        sock = socket.create_connection((self.mx.host, self.mx.port), timeout=30,
                                        source_address=(ip, 0))
        self.addCleanup(sock.close)
        code, lines = Lines(sock).reply()
        self.assertEqual(code, 421, lines)
        # Another address is untouched.
        self.assertEqual(self.probe('127.0.0.111', 'alice@example.test')[0], 250)
        # A relay_networks client is not held off.
        self.p.add_relay_network(ip + '/32')
        self.assertEqual(self.probe(ip, 'alice@example.test')[0], 250)
        self.p.sql('DELETE FROM relay_networks')
        # Once the window has passed, it may try again.
        old = int(time.time()) - 16 * 60
        self.p.sql('UPDATE harvest SET last_at = ?, first_at = ?', old, old)
        self.assertEqual(self.probe(ip, 'alice@example.test')[0], 250)


class LongLineTest(TenantCase):

    def test_our_users_long_lines_are_broken_before_signing(self):
        self.p.sql('INSERT INTO send_as (login, address) VALUES (?, ?)', 'bob', '@third.test')
        c = self.logged_in('bob')
        long_ascii = 'a' * 2500
        long_utf8 = 'é' * 1200
        exactly = 'b' * 998
        code, lines = self.data(c, 'bob@example.test', ['long@remote.example'],
                                'From: ceo@third.test\nSubject: long lines\n',
                                body=f'{long_ascii}\n{long_utf8}\n{exactly}\nend\n')
        self.assertEqual(code, 250, lines)
        copy, = self.queued('long@remote.example')
        for line in copy.split(b'\n'):
            self.assertLessEqual(len(line), 998, line[:80])
        copy.decode('utf-8')  # no character cut in two
        self.assertIn(b'\n' + exactly.encode() + b'\n', copy, 'a 998-octet line was broken')
        body = copy.split(b'\n\n', 1)[1]
        self.assertEqual(body.replace(b'\n ', b''),
                         f'{long_ascii}\n{long_utf8}\n{exactly}\nend\n'.encode())
        # The signature covers the broken lines: it verifies against the key.
        try:
            import dkim
        except ImportError:
            self.skipTest('python3-dkim is not installed')
        keyfile = self.p.sql("SELECT private_key_path FROM dkim_keys")[0][0]
        pub = openssl('pkey', '-in', keyfile, '-pubout', '-outform', 'DER')[-32:]
        record = b'v=DKIM1; k=ed25519; p=' + base64.b64encode(pub)
        msg = copy.replace(b'\n', b'\r\n')
        self.assertTrue(dkim.verify(msg, dnsfunc=lambda name, timeout=5: record),
                        'the signature does not cover the sent bytes')

    def test_mail_from_outside_is_sent_as_it_came(self):
        self.p.add_forward('fwd3@example.test', 'far@remote.example')
        c = self.raw(self.mx, source='127.0.0.120', tls=False)
        code, lines = self.data(c, 'x@outside.example', ['fwd3@example.test'],
                                'From: x@outside.example\nSubject: x\n', body='c' * 1500 + '\n')
        self.assertEqual(code, 250, lines)
        copy, = self.queued('far@remote.example')
        self.assertIn(b'c' * 1500, copy)


if __name__ == '__main__':
    harness.main()
