"""Who may relay (issue 6): POP-before-SMTP, relay_networks, and nobody
else. Loopback has many addresses (127.0.0.0/8), so clients connect from
127.0.0.3, 127.0.0.4, ... to stand for different machines.

POP-before-SMTP uses a real POP3 login (poplib, after STLS) when
pop3-handler is built, else a pop_logins row written with sqlite as
pop3-handler would."""
import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from smtp_base import TlsTestCase, insecure_context  # noqa: E402

HANDLER = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'
PASSWORD = 'Pop-before-smtp-pw-5r2'


def have_pop3():
    return os.access(os.path.join(harness.BUILD, POP3), os.X_OK)


class POP3From(poplib.POP3):
    """poplib.POP3 from a chosen source address."""

    def __init__(self, host, port, source, timeout=20):
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))


class RelayTest(TlsTestCase):
    PASSWORD = PASSWORD
    LOGINS = ('alice', 'bob')
    SMTP_SERVERS = {'mx': 'mx', 'sub': 'submission'}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pop = cls.p.serve(POP3, []) if have_pop3() else None

    def setUp(self):
        self.p.sql('DELETE FROM pop_logins')
        self.p.sql('DELETE FROM relay_networks')
        self.p.sql("DELETE FROM settings WHERE key = 'pop_before_smtp_minutes'")

    # -- helpers ---------------------------------------------------------

    def pop_login(self, ip, login='alice'):
        """A POP3 login from ip: a real one when pop3-handler is built."""
        if self.pop is None:
            self.p.sql('INSERT OR REPLACE INTO pop_logins VALUES (?, ?, ?)',
                       ip, login, int(time.time()))
            return
        c = POP3From(self.pop.host, self.pop.port, ip)
        try:
            if 'STLS' in c.capa():
                c.stls(context=insecure_context())
            c.user(login)
            c.pass_(PASSWORD)
            c.stat()
            c.quit()
        finally:
            c.close()
        rows = self.p.sql('SELECT login FROM pop_logins WHERE ip = ?', ip)
        self.assertEqual(rows, [(login,)], 'pop3-handler did not record the login')

    def smtp(self, source, srv=None):
        srv = srv or self.mx
        s = smtplib.SMTP(srv.host, srv.port, timeout=30, source_address=(source, 0))
        self.addCleanup(s.close)
        self.assertEqual(s.ehlo('client.test')[0], 250)
        return s

    def try_relay(self, source, sender='alice@example.test', rcpt='friend@remote.example',
                  srv=None):
        """(code of MAIL, code of RCPT) from source, then RSET."""
        s = self.smtp(source, srv)
        mail = s.mail(sender)[0]
        rcpt_code = s.rcpt(rcpt)[0] if mail == 250 else None
        s.rset()
        s.quit()
        return mail, rcpt_code

    def relays(self, source, **kw):
        mail, rcpt = self.try_relay(source, **kw)
        self.assertEqual(mail, 250)
        return rcpt == 250

    def refused(self, source, **kw):
        mail, rcpt = self.try_relay(source, **kw)
        self.assertEqual(mail, 250)
        return rcpt == 554

    # -- POP-before-SMTP ----------------------------------------------------

    def test_pop_before_smtp_from_that_ip_only(self):
        self.assertTrue(self.refused('127.0.0.3'), 'relayed before any POP3 login')
        self.pop_login('127.0.0.3')
        self.assertTrue(self.relays('127.0.0.3'), 'POP3 login did not open relaying')
        self.assertTrue(self.refused('127.0.0.4'), 'another IP may relay too')
        # And the message really goes into the queue.
        s = self.smtp('127.0.0.3')
        s.sendmail('alice@example.test', ['queued@remote.example'], b'Subject: pbs\r\n\r\nx\r\n')
        s.quit()
        rows = self.p.sql('SELECT m.client_ip, m.auth_login FROM queue_recipients r JOIN '
                          'queue_messages m ON m.id = r.message_id WHERE r.recipient = ?',
                          'queued@remote.example')
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][0], '127.0.0.3')
        self.assertIn('event=relay result=pop_before_smtp login=alice', self.p.log_text())

    def test_pop_before_smtp_window(self):
        self.pop_login('127.0.0.3')
        now = int(time.time())
        self.p.sql("UPDATE pop_logins SET at = ? WHERE ip = '127.0.0.3'", now - 31 * 60)
        self.assertTrue(self.refused('127.0.0.3'), 'a 31-minute-old POP3 login still relays')
        # The admin widens the window: read per connection, no restart.
        self.p.set('pop_before_smtp_minutes', '60')
        self.assertTrue(self.relays('127.0.0.3'))
        self.p.set('pop_before_smtp_minutes', '5')
        self.p.sql("UPDATE pop_logins SET at = ? WHERE ip = '127.0.0.3'", now - 6 * 60)
        self.assertTrue(self.refused('127.0.0.3'))
        self.p.sql("UPDATE pop_logins SET at = ? WHERE ip = '127.0.0.3'", now - 4 * 60)
        self.assertTrue(self.relays('127.0.0.3'))
        self.p.set('pop_before_smtp_minutes', '0')  # off
        self.assertTrue(self.refused('127.0.0.3'))

    def test_pop_before_smtp_sender_must_be_the_logins(self):
        self.pop_login('127.0.0.3', 'alice')
        mail, rcpt = self.try_relay('127.0.0.3', sender='bob@example.test')
        self.assertEqual((mail, rcpt), (250, 553))
        mail, rcpt = self.try_relay('127.0.0.3', sender='someone@remote.example')
        self.assertEqual((mail, rcpt), (250, 553))
        mail, rcpt = self.try_relay('127.0.0.3', sender='')
        self.assertEqual(rcpt, 553)
        self.assertTrue(self.relays('127.0.0.3', sender='alice@example.test'))
        self.assertIn('sender_not_owned login=alice', self.p.log_text())
        # Local delivery from that IP needs no ownership: it is plain MX.
        mail, rcpt = self.try_relay('127.0.0.3', sender='bob@remote.example',
                                    rcpt='bob@example.test')
        self.assertEqual((mail, rcpt), (250, 250))

    def test_pop_before_smtp_is_no_reason_to_send_passwords_in_clear(self):
        self.pop_login('127.0.0.3')
        s = self.smtp('127.0.0.3', self.sub)
        self.assertFalse(s.has_extn('auth'), 'AUTH offered in clear to a POP-before-SMTP IP')
        code, msg = s.docmd('AUTH', 'PLAIN AGFsaWNlAHdyb25n')
        self.assertEqual(code, 538, msg)
        s.quit()

    # -- relay_networks -------------------------------------------------------

    def add_network(self, net):
        self.p.add_relay_network(net)

    def test_host_entry(self):
        self.add_network('127.0.0.8')
        self.assertTrue(self.relays('127.0.0.8', sender='anyone@remote.example'))
        self.assertTrue(self.refused('127.0.0.9'))

    def test_cidr_range(self):
        self.add_network('127.0.1.0/24')
        self.assertTrue(self.relays('127.0.1.7'))
        self.assertTrue(self.relays('127.0.1.254'))
        self.assertTrue(self.refused('127.0.2.1'))
        self.assertTrue(self.refused('127.0.0.1'))

    def test_ipv6_range(self):
        try:
            srv6 = self.p.serve(HANDLER, ['--mode=mx'], host='::1')
        except Exception as e:
            self.skipTest(f'cannot listen on ::1: {e}')
        self.assertTrue(self.refused('::1', srv=srv6))
        self.add_network('::/120')
        self.assertTrue(self.relays('::1', srv=srv6))
        self.p.sql('DELETE FROM relay_networks')
        self.add_network('2001:db8::/32')
        self.assertTrue(self.refused('::1', srv=srv6))
        # An IPv4 network never matches an IPv6 peer, nor the other way.
        self.add_network('127.0.0.0/8')
        self.assertTrue(self.refused('::1', srv=srv6))
        self.p.sql('DELETE FROM relay_networks')
        self.add_network('::1')
        self.assertTrue(self.refused('127.0.0.1'))
        self.assertTrue(self.relays('::1', srv=srv6))

    def test_malformed_rows_ignored_not_trusting(self):
        bad = ['garbage', '127.0.0.0/33', '127.0.0.0/', '127.0.0.0/-1', '127.0.0.0/8x',
               '127.0.0', '::1/129', '', ' 127.0.0.0/8', '127.0.0.0/8 ', '127.0.0.0 /8']
        for net in bad:
            self.add_network(net)
        self.assertTrue(self.refused('127.0.0.10'))
        log = self.p.log_text()
        self.assertIn('event=relay_networks result=malformed network="garbage"', log)
        self.assertIn('network="127.0.0.0/33"', log)
        # A good row among the bad ones still works.
        self.add_network('127.0.0.10/32')
        self.assertTrue(self.relays('127.0.0.10'))
        self.assertTrue(self.refused('127.0.0.11'))

    def test_slash_zero_never_trusts(self):
        for net in ('0.0.0.0/0', '::/0', '127.0.0.1/0', '::ffff:0.0.0.0/96'):
            self.add_network(net)
        self.assertTrue(self.refused('127.0.0.12'))
        self.assertIn('network="0.0.0.0/0"', self.p.log_text())

    def test_trusted_network_may_auth_in_clear_and_forgets_it_after_starttls(self):
        self.add_network('127.0.0.13')
        s = self.smtp('127.0.0.13', self.sub)
        self.assertTrue(s.has_extn('auth'), 'AUTH not offered to a trusted network')
        s.login('alice', PASSWORD)
        self.assertEqual(s.mail('alice@example.test')[0], 250)
        s.rset()
        s.starttls(context=insecure_context())
        s.ehlo('client.test')
        # RFC 3207 4.2: what was learned before TLS is forgotten.
        code, msg = s.mail('alice@example.test')
        self.assertEqual(code, 530, msg)
        s.login('alice', PASSWORD)
        self.assertEqual(s.mail('alice@example.test')[0], 250)
        s.quit()

    def test_submission_needs_auth_even_when_trusted(self):
        self.add_network('127.0.0.14')
        self.pop_login('127.0.0.14')
        s = self.smtp('127.0.0.14', self.sub)
        self.assertEqual(s.mail('alice@example.test')[0], 530)
        s.quit()

    # -- nobody else ------------------------------------------------------------

    TRICKS = [
        'friend@remote.example',
        'friend@REMOTE.EXAMPLE',
        'FRIEND@Remote.Example',
        'friend%remote.example@example.test',         # percent hack via a hosted domain
        'friend%remote.example@EXAMPLE.TEST',
        'friend@remote.example%example.test',
        '@example.test:friend@remote.example',         # source route
        '@EXAMPLE.TEST,@example.test:friend@remote.example',
        '"friend@remote.example"@example.test',       # quoted local part with @
        '"friend@remote.example"',
        '"friend%remote.example"@example.test',
        'remote.example!friend@example.test',         # ! paths
        'remote.example!friend',
        'friend@[192.0.2.1]',                         # address literals
        'friend@[127.0.0.1]',
        'friend@[IPv6:2001:db8::1]',
        'friend@remote.example.',                     # trailing dots
        'friend@remote.example..',
        'friend@example.test.remote.example',
        'friend@remote.example@example.test',
        'friend@example.test@remote.example',
    ]

    def test_open_relay_tricks_refused_from_untrusted_ip(self):
        # Trust is per IP: another client being trusted changes nothing.
        self.add_network('127.0.0.20')
        self.pop_login('127.0.0.21')
        for rcpt in self.TRICKS:
            with self.subTest(rcpt=rcpt):
                # One session each: 20 refusals end a session.
                s = self.smtp('127.0.0.22')
                self.assertEqual(s.mail('someone@remote.example')[0], 250)
                code, msg = s.rcpt(rcpt)
                self.assertGreaterEqual(code, 500, f'RCPT TO:<{rcpt}> got {code} {msg!r}')
                # An accepted DATA would show up below; nothing may.
                s.rset()
                s.quit()
        self.assertEqual(self.p.sql('SELECT count(*) FROM queue_recipients r JOIN queue_messages m '
                                    "ON m.id = r.message_id WHERE m.client_ip = '127.0.0.22'"),
                         [(0,)])
        self.assertIn('event=rcpt result=relay_denied ip=127.0.0.22', self.p.log_text())

    def test_local_delivery_needs_no_right(self):
        mail, rcpt = self.try_relay('127.0.0.23', sender='stranger@remote.example',
                                    rcpt='alice@EXAMPLE.test')
        self.assertEqual((mail, rcpt), (250, 250))

    @unittest.skipUnless(shutil.which('nmap'), 'nmap not installed')
    def test_nmap_smtp_open_relay(self):
        def scan():
            r = subprocess.run(['nmap', '-n', '-Pn', '-p', str(self.mx.port),
                                '--script', '+smtp-open-relay', '--script-args',
                                'smtp-open-relay.domain=mx.test.example,'
                                'smtp-open-relay.ip=127.0.0.1', self.mx.host],
                               capture_output=True, timeout=110)
            out = r.stdout.decode(errors='replace')
            self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors='replace'))
            self.assertIn('smtp-open-relay', out, out)
            return out

        out = scan()
        self.assertRegex(out, r"doesn't seem to be an open relay", out)
        self.assertNotRegex(out, r'Server is an open relay', out)
        # Control: the same scan from a trusted network reports an open
        # relay, so the verdict above is nmap's and not a failed scan.
        self.add_network('127.0.0.1')
        out = scan()
        self.assertRegex(out, r'Server is an open relay', out)


if __name__ == '__main__':
    harness.main()
