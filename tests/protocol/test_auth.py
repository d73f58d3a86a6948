"""SMTP AUTH (issue 6): PLAIN and LOGIN on --mode=submission after
STARTTLS and on --mode=submissions, with smtplib, swaks, curl and msmtp;
the protocol errors of RFC 4954; sender ownership; the Received header of
an authenticated message and the queue it lands in; the failed-login
throttle kept in SQLite; and the per-login sending rate limit."""
import base64
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Postage  # noqa: E402
from smtp_base import Lines, TlsTestCase, insecure_context, use_cert  # noqa: E402

HANDLER = 'smtp-handler/smtp-handler'
PASSWORD = 'Tr0ub4dor&3-auth'
WINDOW = 15 * 60


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def plain(login, password, authzid=''):
    return b64(f'{authzid}\0{login}\0{password}')


def run(cmd, input=b'', timeout=60):
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)


class AuthTest(TlsTestCase):
    PASSWORD = PASSWORD
    LOGINS = ('alice', 'bob', 'dave', 'erin', 'frank')
    SMTP_SERVERS = {'sub': 'submission', 'subs': 'submissions', 'mx': 'mx'}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        p = cls.p
        p.add_domain('alice.test')
        p.add_mailbox('carol', PASSWORD, enabled=0)
        p.add_address('carol@example.test', 'carol')
        p.add_address('@alice.test', 'alice')           # alice's catch-all domain
        p.add_address('alias@example.test', 'alice')    # a second address of alice

    # -- helpers ---------------------------------------------------------

    def smtp(self, srv=None, source=None):
        """smtplib on 587 after STARTTLS and a second EHLO."""
        srv = srv or self.sub
        s = smtplib.SMTP(srv.host, srv.port, timeout=30,
                         source_address=(source, 0) if source else None)
        self.addCleanup(s.close)
        s.ehlo('client.test')
        s.starttls(context=insecure_context())
        s.ehlo('client.test')
        return s

    def smtp_ssl(self):
        s = smtplib.SMTP_SSL(self.subs.host, self.subs.port, timeout=30,
                             context=insecure_context())
        self.addCleanup(s.close)
        s.ehlo('client.test')
        return s

    def raw(self, srv=None, source=None, tls=True):
        """A raw dialog on 587 (after STARTTLS and EHLO when tls)."""
        srv = srv or self.sub
        fam = socket.AF_INET6 if ':' in srv.host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.settimeout(30)
        if source:
            sock.bind((source, 0))
        sock.connect((srv.host, srv.port))
        c, ehlo = self.greeted(sock, tls)
        if tls:
            self.assertIn('250-AUTH PLAIN LOGIN', ehlo)
        return c

    def queued_for(self, rcpt):
        return self.p.sql('SELECT m.id, m.sender, m.auth_login FROM queue_recipients r '
                          'JOIN queue_messages m ON m.id = r.message_id WHERE r.recipient = ?',
                          rcpt)

    def spool_file(self, qid):
        return os.path.join(self.p.spool_dir, 'queue', qid)

    def received_header(self, path):
        with open(path, encoding='utf-8', errors='replace') as f:
            text = f.read()
        lines = text.split('\n')
        self.assertTrue(lines[0].startswith('Received: '), lines[0])
        out = [lines[0]]
        for ln in lines[1:]:
            if ln[:1] not in (' ', '\t'):
                break
            out.append(ln)
        return '\n'.join(out)

    def failures(self, ip_key):
        rows = self.p.sql('SELECT failures FROM auth_failures WHERE ip_key = ?', ip_key)
        return rows[0][0] if rows else 0

    def seed_failures(self, ip_key, n, at=None):
        at = int(time.time()) if at is None else at
        self.p.sql('INSERT OR REPLACE INTO auth_failures VALUES (?, ?, ?, ?)', ip_key, n, at, at)

    # -- PLAIN and LOGIN with real clients -------------------------------------

    def test_smtplib_plain_and_login_over_starttls(self):
        for mech in ('PLAIN', 'LOGIN'):
            for initial in (True, False):
                with self.subTest(mech=mech, initial_response=initial):
                    s = self.smtp()
                    s.user, s.password = 'alice', PASSWORD
                    auth = s.auth_plain if mech == 'PLAIN' else s.auth_login
                    code, msg = s.auth(mech, auth, initial_response_ok=initial)
                    self.assertEqual(code, 235, msg)
                    self.assertEqual(s.mail('alice@example.test')[0], 250)
                    s.quit()

    def test_smtplib_login_over_submissions(self):
        s = self.smtp_ssl()
        self.assertIn('PLAIN', s.esmtp_features.get('auth', ''))
        s.login('alice', PASSWORD)
        s.sendmail('alice@example.test', ['rcpt465@remote.example'],
                   b'Subject: 465\r\n\r\nvia implicit TLS\r\n')
        s.quit()
        rows = self.queued_for('rcpt465@remote.example')
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][2], 'alice')

    def test_relayed_message_in_queue_with_received(self):
        s = self.smtp()
        s.login('alice', PASSWORD)
        s.sendmail('alias@example.test', ['someone@remote.example'],
                   b'From: Alice <alias@example.test>\r\nSubject: relayed\r\n\r\nhello\r\n')
        s.quit()
        rows = self.queued_for('someone@remote.example')
        self.assertEqual(len(rows), 1, rows)
        qid, sender, login = rows[0]
        self.assertEqual((sender, login), ('alias@example.test', 'alice'))
        path = self.spool_file(qid)
        self.assertTrue(os.path.exists(path), path)
        received = self.received_header(path)
        self.assertIn('(authenticated)', received)
        self.assertNotIn('alice', received)
        self.assertIn('with ESMTPSA', received)
        with open(path) as f:
            self.assertIn('From: Alice <alias@example.test>', f.read())  # left as written
        self.assertRegex(self.p.log_text(), r'event=auth result=ok mech=PLAIN login="alice"')

    def test_received_shows_login_when_enabled(self):
        self.p.set('received_show_login', '1')
        try:
            s = self.smtp()
            s.login('alice', PASSWORD)
            s.sendmail('alice@example.test', ['shown@remote.example'], b'Subject: x\r\n\r\nx\r\n')
            s.quit()
        finally:
            self.p.set('received_show_login', '0')
        rows = self.queued_for('shown@remote.example')
        self.assertEqual(len(rows), 1)
        self.assertIn('(authenticated as alice)', self.received_header(self.spool_file(rows[0][0])))

    @unittest.skipUnless(shutil.which('swaks'), 'swaks not installed')
    def test_swaks_auth_starttls_and_465(self):
        cases = [('587', self.sub, ['--tls'], 'PLAIN'),
                 ('465', self.subs, ['--tls-on-connect'], 'LOGIN')]
        for name, srv, tls, mech in cases:
            with self.subTest(port=name):
                rcpt = f'swaks{name}@remote.example'
                r = run(['swaks', '--server', f'{srv.host}:{srv.port}', *tls,
                         '--auth', mech, '--auth-user', 'alice', '--auth-password', PASSWORD,
                         '--from', 'alice@example.test', '--to', rcpt, '--helo', 'swaks.test'])
                out = r.stdout.decode(errors='replace')
                self.assertEqual(r.returncode, 0, out)
                self.assertIn('235 2.7.0', out)
                self.assertEqual(len(self.queued_for(rcpt)), 1)

    @unittest.skipUnless(shutil.which('curl'), 'curl not installed')
    def test_curl_user_over_smtps(self):
        msg = os.path.join(self.p.dir, 'curl.eml')
        with open(msg, 'wb') as f:
            f.write(b'From: alice@example.test\r\nSubject: curl\r\n\r\nhi\r\n')
        r = run(['curl', '-sS', '-k', '--max-time', '30',
                 f'smtps://{self.subs.host}:{self.subs.port}/curl.test',
                 '--user', f'alice:{PASSWORD}', '--mail-from', 'alice@example.test',
                 '--mail-rcpt', 'curl@remote.example', '-T', msg])
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors='replace'))
        self.assertEqual(len(self.queued_for('curl@remote.example')), 1)
        # And the wrong password is refused (curl exit 67: login denied).
        r = run(['curl', '-sS', '-k', '--max-time', '30',
                 f'smtps://{self.subs.host}:{self.subs.port}/curl.test',
                 '--user', 'bob:wrong', '--mail-from', 'bob@example.test',
                 '--mail-rcpt', 'curl2@remote.example', '-T', msg])
        self.assertEqual(r.returncode, 67, r.stderr.decode(errors='replace'))
        self.assertEqual(self.queued_for('curl2@remote.example'), [])

    @unittest.skipUnless(shutil.which('msmtp'), 'msmtp not installed')
    def test_msmtp_as_a_user_configures_it(self):
        for name, srv, starttls in (('587', self.sub, 'on'), ('465', self.subs, 'off')):
            with self.subTest(port=name):
                conf = os.path.join(self.p.dir, f'msmtprc-{name}')
                with open(conf, 'w') as f:
                    f.write(f"""defaults
tls on
tls_starttls {starttls}
tls_certcheck off
logfile {self.p.dir}/msmtp-{name}.log

account postage
host {srv.host}
port {srv.port}
auth on
user alice
password {PASSWORD}
from alice@example.test

account default : postage
""")
                os.chmod(conf, 0o600)
                rcpt = f'msmtp{name}@remote.example'
                r = run(['msmtp', '-C', conf, rcpt],
                        input=b'From: alice@example.test\nSubject: msmtp\n\nhello\n')
                self.assertEqual(r.returncode, 0, r.stderr.decode(errors='replace'))
                self.assertEqual(len(self.queued_for(rcpt)), 1)

    # -- the RFC 4954 dialog ------------------------------------------------

    def test_no_auth_before_tls_on_587(self):
        c = self.raw(tls=False)
        code, lines = c.cmd('EHLO client.test')
        self.assertNotIn('250-AUTH PLAIN LOGIN', lines)
        code, lines = c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))
        self.assertEqual(code, 538, lines)
        self.assertTrue(lines[0].startswith('538 5.7.11'), lines)
        code, lines = c.cmd('MAIL FROM:<alice@example.test>')
        self.assertEqual(code, 530, lines)

    def test_mail_before_auth_refused(self):
        c = self.raw()
        code, lines = c.cmd('MAIL FROM:<alice@example.test>')
        self.assertEqual(code, 530, lines)
        self.assertTrue(lines[0].startswith('530 5.7.0'), lines)
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)
        self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)

    def test_wrong_password_unknown_login_and_disabled_mailbox(self):
        for login, password, why in (('bob', 'wrong', 'wrong password'),
                                     ('nobody', PASSWORD, 'unknown login'),
                                     ('carol', PASSWORD, 'disabled mailbox')):
            with self.subTest(why):
                c = self.raw(source='127.0.0.30')
                code, lines = c.cmd('AUTH PLAIN ' + plain(login, password))
                self.assertEqual(code, 535, lines)
                self.assertTrue(lines[0].startswith('535 5.7.8'), lines)
                self.assertEqual(c.cmd('MAIL FROM:<carol@example.test>')[0], 530)
        self.p.sql("DELETE FROM auth_failures WHERE ip_key = '127.0.0.30'")
        log = self.p.log_text()
        self.assertIn('result=disabled mech=PLAIN login="carol"', log)
        self.assertNotIn(PASSWORD, log)

    def test_login_mechanism_dialog(self):
        c = self.raw()
        code, lines = c.cmd('AUTH LOGIN')
        self.assertEqual(lines, ['334 VXNlcm5hbWU6'])
        code, lines = c.cmd(b64('alice'))
        self.assertEqual(lines, ['334 UGFzc3dvcmQ6'])
        code, lines = c.cmd(b64(PASSWORD))
        self.assertEqual(code, 235, lines)

    def test_cancel_with_star(self):
        c = self.raw()
        self.assertEqual(c.cmd('AUTH PLAIN')[0], 334)
        code, lines = c.cmd('*')
        self.assertEqual(code, 501, lines)
        self.assertEqual(c.cmd('AUTH LOGIN')[0], 334)
        self.assertEqual(c.cmd(b64('alice'))[0], 334)
        self.assertEqual(c.cmd('*')[0], 501)
        # The session goes on and a real AUTH still works.
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)

    def test_bad_base64(self):
        c = self.raw()
        for bad in ('AUTH PLAIN !!!!', 'AUTH PLAIN YWxp=', 'AUTH PLAIN YQ=a', 'AUTH PLAIN YW=xp'):
            code, lines = c.cmd(bad)
            self.assertEqual(code, 501, (bad, lines))
            self.assertTrue(lines[0].startswith('501 5.5.2'), lines)
        self.assertEqual(c.cmd('AUTH PLAIN')[0], 334)
        code, lines = c.cmd('not base64 at all')
        self.assertEqual(code, 501, lines)
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)

    def test_second_auth_refused(self):
        c = self.raw()
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)
        code, lines = c.cmd('AUTH PLAIN ' + plain('bob', PASSWORD))
        self.assertEqual(code, 503, lines)
        # Still alice: bob's address is not hers.
        self.assertEqual(c.cmd('MAIL FROM:<bob@example.test>')[0], 553)

    def test_unknown_mechanism_and_authzid(self):
        c = self.raw()
        self.assertEqual(c.cmd('AUTH CRAM-MD5')[0], 504)
        # PLAIN with an authorization identity naming someone else.
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD, authzid='bob'))[0], 535)
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD, authzid='alice'))[0], 235)

    def test_too_many_failures_in_one_session_hang_up(self):
        c = self.raw(source='127.0.0.31')
        for _ in range(2):
            self.assertEqual(c.cmd('AUTH PLAIN ' + plain('bob', 'wrong'))[0], 535)
        code, lines = c.cmd('AUTH PLAIN ' + plain('bob', 'wrong'))
        self.assertEqual(code, 535)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(c.closed())
        self.p.sql("DELETE FROM auth_failures WHERE ip_key = '127.0.0.31'")

    def test_auth_on_mx_only_over_tls(self):
        c = self.raw(srv=self.mx, tls=False)
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 538)
        c = self.raw(srv=self.mx)
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)
        self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<viamx@remote.example>')[0], 250)

    # -- sender ownership ---------------------------------------------------

    def test_sender_ownership(self):
        c = self.raw()
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)
        for sender, ok in (('alice@example.test', True),
                           ('alias@example.test', True),
                           ('Alice@EXAMPLE.TEST', True),
                           ('anything@alice.test', True),    # her catch-all domain
                           ('bob@example.test', False),      # another mailbox
                           ('BOB@example.test', False),
                           ('nobody@example.test', False),   # nobody's
                           ('alice@foreign.example', False),  # a foreign domain
                           ('alice@example.test.foreign.example', False)):
            with self.subTest(sender=sender):
                code, lines = c.cmd(f'MAIL FROM:<{sender}>')
                if ok:
                    self.assertEqual(code, 250, lines)
                    self.assertEqual(c.cmd('RSET')[0], 250)
                else:
                    self.assertEqual(code, 553, lines)
                    self.assertTrue(lines[0].startswith('553 5.7.1'), lines)
                    self.assertIn(f'<{sender}>: Sender address rejected: not one of your addresses',
                                  lines[0])
                    # The reply names the address, never the login.
                    self.assertNotIn('alice', lines[0].replace(sender, ''))
        self.assertIn('event=mail result=sender_not_owned login=alice', self.p.log_text())

    def test_null_sender_when_authenticated(self):
        # A read receipt (RFC 8098) or a vacation reply: MAIL FROM:<>.
        c = self.raw()
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)
        self.assertEqual(c.cmd('MAIL FROM:<>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<mdn@remote.example>')[0], 250)
        self.assertEqual(c.cmd('RSET')[0], 250)
        # <postmaster> alone is still nobody's to send as.
        self.assertIn(c.cmd('MAIL FROM:<postmaster>')[0], (501, 553))

    # -- the failed-login throttle --------------------------------------------

    def timed_auth(self, source, login, password):
        c = self.raw(source=source)
        t0 = time.monotonic()
        code, lines = c.cmd('AUTH PLAIN ' + plain(login, password))
        return code, lines, time.monotonic() - t0, c

    def test_throttle_delays_after_five_failures(self):
        ip = '127.0.0.40'
        code, _, fast, _ = self.timed_auth(ip, 'bob', 'wrong')
        self.assertEqual(code, 535)
        self.assertLess(fast, 1.0, 'first failure already slowed')
        self.assertEqual(self.failures(ip), 1)
        self.seed_failures(ip, 5)
        code, _, slow, _ = self.timed_auth(ip, 'bob', 'wrong')
        self.assertEqual(code, 535)
        self.assertGreaterEqual(slow, 1.0, 'not delayed after 5 failures')
        self.assertEqual(self.failures(ip), 6)
        # A right password from that IP is slowed too, but gets in.
        code, _, t, _ = self.timed_auth(ip, 'alice', PASSWORD)
        self.assertEqual(code, 235)
        self.assertGreaterEqual(t, 1.0)
        # Only time clears failures: a working password does not.
        self.assertEqual(self.failures(ip), 6, 'a success cleared the failures')

    def test_throttle_refuses_at_twenty_without_checking(self):
        ip = '127.0.0.41'
        self.seed_failures(ip, 20)
        code, lines, t, c = self.timed_auth(ip, 'alice', PASSWORD)
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith('421 4.7.0'), lines)
        self.assertTrue(c.closed())
        self.assertEqual(self.failures(ip), 20, 'a refused attempt was checked or counted')
        self.assertIn('event=auth result=throttled', self.p.log_text())

    def test_other_ip_goes_straight_in(self):
        self.seed_failures('127.0.0.1', 20)
        self.seed_failures('127.0.0.42', 20)
        try:
            code, lines, t, _ = self.timed_auth('127.0.0.5', 'alice', PASSWORD)
            self.assertEqual(code, 235, lines)
            self.assertLess(t, 1.0)
        finally:
            self.p.sql("DELETE FROM auth_failures WHERE ip_key = '127.0.0.1'")

    def test_success_does_not_clear_the_counter(self):
        ip = '127.0.0.43'
        self.seed_failures(ip, 3)
        code, _, _, _ = self.timed_auth(ip, 'alice', PASSWORD)
        self.assertEqual(code, 235)
        self.assertEqual(self.failures(ip), 3)

    def test_old_failures_expire_and_are_pruned(self):
        old = int(time.time()) - WINDOW - 60
        self.seed_failures('127.0.0.44', 25, at=old)
        self.seed_failures('192.0.2.99', 7, at=old)
        # Out of the window: not throttled.
        code, lines, t, _ = self.timed_auth('127.0.0.44', 'bob', 'wrong')
        self.assertEqual(code, 535, lines)
        self.assertLess(t, 1.0)
        # The failure was written, and old rows were pruned on that write.
        self.assertEqual(self.p.sql("SELECT failures FROM auth_failures WHERE ip_key = '192.0.2.99'"), [])
        self.assertEqual(self.failures('127.0.0.44'), 1)
        self.p.sql("DELETE FROM auth_failures WHERE ip_key = '127.0.0.44'")

    def test_ipv6_counted_per_64(self):
        try:
            srv = self.p.serve(HANDLER, ['--mode=submission'], host='::1')
        except Exception as e:  # no IPv6 loopback here
            self.skipTest(f'cannot listen on ::1: {e}')
        c = self.raw(srv=srv)
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('bob', 'wrong'))[0], 535)
        self.assertEqual(self.p.sql("SELECT failures FROM auth_failures WHERE ip_key = '::/64'"), [(1,)])
        self.seed_failures('::/64', 20)
        c = self.raw(srv=srv)
        code, lines = c.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))
        self.assertEqual(code, 421, lines)
        self.p.sql("DELETE FROM auth_failures WHERE ip_key = '::/64'")

    # -- the sending rate of one login ------------------------------------------

    def send(self, c, sender, rcpts, body='Subject: rate\r\n\r\nx\r\n'):
        """MAIL, RCPTs, DATA: a list of the codes."""
        codes = [c.cmd(f'MAIL FROM:<{sender}>')[0]]
        if codes[0] != 250:
            return codes
        for r in rcpts:
            codes.append(c.cmd(f'RCPT TO:<{r}>')[0])
        if 250 not in codes[1:]:
            c.cmd('RSET')
            return codes
        code, _ = c.cmd('DATA')
        codes.append(code)
        if code == 354:
            c.sock.sendall(body.encode() + b'.\r\n')
            codes.append(c.reply()[0])
        return codes

    def sent_count(self, login):
        rows = self.p.sql('SELECT sum(count) FROM send_counts WHERE login = ? AND hour = ?',
                          login, int(time.time()) // 3600)
        return rows[0][0] or 0

    def test_rate_limit_third_message_refused(self):
        self.p.set('max_messages_per_hour_per_login', '2')
        try:
            c = self.raw()
            self.assertEqual(c.cmd('AUTH PLAIN ' + plain('dave', PASSWORD))[0], 235)
            self.assertEqual(self.send(c, 'dave@example.test', ['r1@remote.example']),
                             [250, 250, 354, 250])
            # A new connection: the count lives in the database.
            c = self.raw()
            self.assertEqual(c.cmd('AUTH PLAIN ' + plain('dave', PASSWORD))[0], 235)
            self.assertEqual(self.send(c, 'dave@example.test', ['alice@example.test']),
                             [250, 250, 354, 250])
            self.assertEqual(self.sent_count('dave'), 2)
            code, lines = c.cmd('MAIL FROM:<dave@example.test>')
            self.assertEqual(code, 450, lines)
            self.assertTrue(lines[0].startswith('450 4.7.1'), lines)
            self.assertEqual(self.sent_count('dave'), 2)
            # Another login is not affected.
            self.p.sql("DELETE FROM send_counts WHERE login = 'alice'")
            c2 = self.raw()
            self.assertEqual(c2.cmd('AUTH PLAIN ' + plain('alice', PASSWORD))[0], 235)
            self.assertEqual(c2.cmd('MAIL FROM:<alice@example.test>')[0], 250)
            # Last hour's count does not hold dave back this hour.
            self.p.sql('UPDATE send_counts SET hour = hour - 1 WHERE login = ?', 'dave')
            self.assertEqual(self.send(c, 'dave@example.test', ['r3@remote.example']),
                             [250, 250, 354, 250])
        finally:
            self.p.set('max_messages_per_hour_per_login', '500')
        self.assertIn('event=rate_limit result=refused login=dave', self.p.log_text())

    def test_rate_limit_counts_recipients(self):
        self.p.set('max_messages_per_hour_per_login', '3')
        try:
            c = self.raw()
            self.assertEqual(c.cmd('AUTH PLAIN ' + plain('frank', PASSWORD))[0], 235)
            self.assertEqual(self.send(c, 'frank@example.test',
                                       ['a@remote.example', 'b@remote.example']),
                             [250, 250, 250, 354, 250])
            self.assertEqual(self.sent_count('frank'), 2)
            # One more recipient fits, the second does not.
            self.assertEqual(self.send(c, 'frank@example.test',
                                       ['c@remote.example', 'd@remote.example']),
                             [250, 250, 450, 354, 250])
            self.assertEqual(self.sent_count('frank'), 3)
            self.assertEqual(c.cmd('MAIL FROM:<frank@example.test>')[0], 450)
        finally:
            self.p.set('max_messages_per_hour_per_login', '500')

    def test_rate_limit_counts_only_accepted_messages(self):
        self.p.set('max_messages_per_hour_per_login', '1')
        try:
            c = self.raw()
            self.assertEqual(c.cmd('AUTH PLAIN ' + plain('erin', PASSWORD))[0], 235)
            # Refused at end of DATA (bare LF): not counted.
            codes = self.send(c, 'erin@example.test', ['e1@remote.example'],
                              body='Subject: bare\r\n\r\nbare\nLF\r\n')
            self.assertEqual(codes, [250, 250, 354, 550])
            # Abandoned transaction: not counted either.
            self.assertEqual(c.cmd('MAIL FROM:<erin@example.test>')[0], 250)
            self.assertEqual(c.cmd('RCPT TO:<e2@remote.example>')[0], 250)
            self.assertEqual(c.cmd('RSET')[0], 250)
            self.assertEqual(self.sent_count('erin'), 0)
            self.assertEqual(self.send(c, 'erin@example.test', ['e3@remote.example']),
                             [250, 250, 354, 250])
            self.assertEqual(self.sent_count('erin'), 1)
            self.assertEqual(c.cmd('MAIL FROM:<erin@example.test>')[0], 450)
        finally:
            self.p.set('max_messages_per_hour_per_login', '500')

    def test_rate_limit_default_is_generous(self):
        # No setting row: the default (500) applies, so 3 messages pass.
        self.p.sql("DELETE FROM settings WHERE key = 'max_messages_per_hour_per_login'")
        c = self.raw()
        self.assertEqual(c.cmd('AUTH PLAIN ' + plain('bob', PASSWORD))[0], 235)
        for i in range(3):
            self.assertEqual(self.send(c, 'bob@example.test', [f'g{i}@remote.example']),
                             [250, 250, 354, 250])
        self.assertEqual(self.sent_count('bob'), 3)
        self.p.sql("UPDATE send_counts SET count = 500 WHERE login = 'bob'")
        self.assertEqual(c.cmd('MAIL FROM:<bob@example.test>')[0], 450)
        self.p.sql("DELETE FROM send_counts WHERE login = 'bob'")


class DummyHashTimingTest(unittest.TestCase):
    """An unknown login costs a hash like a wrong password, so timing does
    not tell which logins exist."""

    def test_unknown_login_takes_as_long_as_wrong_password(self):
        with Postage() as p:
            use_cert(p)
            p.add_mailbox('yes', PASSWORD, scheme='yescrypt')
            srv = p.serve(HANDLER, ['--mode=submissions'])
            times = {'wrong': [], 'unknown': []}
            for i in range(6):
                for kind, login in (('wrong', 'yes'), ('unknown', f'nosuch{i}')):
                    # A connection each: one session allows only 3 failures.
                    sock = socket.create_connection((srv.host, srv.port), timeout=30)
                    with insecure_context().wrap_socket(sock) as tls:
                        c = Lines(tls)
                        self.assertEqual(c.reply()[0], 220)
                        self.assertEqual(c.cmd('EHLO client.test')[0], 250)
                        p.sql('DELETE FROM auth_failures')
                        t0 = time.monotonic()
                        code, lines = c.cmd('AUTH PLAIN ' + plain(login, 'not the password'))
                        times[kind].append(time.monotonic() - t0)
                        self.assertEqual(code, 535, lines)
                        c.cmd('QUIT')
            wrong = statistics.median(times['wrong'])
            unknown = statistics.median(times['unknown'])
            if wrong < 0.005:
                self.skipTest(f'yescrypt too fast here ({wrong * 1000:.1f} ms) to compare')
            self.assertGreater(unknown, 0.5 * wrong,
                               f'unknown login {unknown * 1000:.1f} ms, wrong password '
                               f'{wrong * 1000:.1f} ms: timing tells logins apart')
            p.check_sanitizers()


if __name__ == '__main__':
    harness.main()
