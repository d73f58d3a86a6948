"""SRS: mail a forward sends on to a remote address leaves with an
SRS0= envelope sender in our domain (so SPF passes at the next hop); a
bounce to that address is verified and goes back to the original sender;
forged and expired ones are refused.

The SRS form is computed here independently from the stored srs_secret:
SRS0=<base32 of the first 40 bits of HMAC-SHA256(secret,
lower("TT=domain=local"))>=TT=domain=local@our-domain.

Run: POSTAGE_BUILD=build /usr/bin/python3 tests/protocol/test_srs.py -v
(as root: it makes its own network namespace; skipped otherwise).
"""
import base64
import glob
import hmac
import os
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402
from harness import Postage, optional_module, smtp_quit  # noqa: E402

spf = optional_module('spf')

SMTP = 'smtp-handler/smtp-handler'
SERVER = '192.0.2.1'            # our MX; example.test's SPF names it
RELAY_CLIENT = '192.0.2.20'     # in relay_networks
OUTSIDE_CLIENT = '198.51.100.7'  # strict.example's own server
B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
BODY_MARKER = 'srs-body-never-in-logs-0815'


def tt_for(day):
    day %= 1024
    return B32[day >> 5] + B32[day & 31]


def srs_address(secret, local, domain, srs_domain, day=None):
    if day is None:
        day = int(time.time() // 86400)
    tt = tt_for(day)
    mac = hmac.new(secret.encode(), f'{tt}={domain}={local}'.lower().encode(), 'sha256').digest()
    h = base64.b32encode(mac[:5]).decode()
    return f'SRS0={h}={tt}={domain}={local}@{srs_domain}'


def msg(sender='someone@strict.example'):
    return (f'From: {sender}\r\nTo: list@example.test\r\nSubject: forwarded\r\n'
            f'Message-ID: <{time.time()}@strict.example>\r\n\r\n{BODY_MARKER}\r\n').encode()


class SrsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = netns.DnsServer()
        cls.dns.txt('example.test', 'v=spf1 ip4:192.0.2.1 -all')
        cls.dns.txt('strict.example', 'v=spf1 ip4:198.51.100.7 -all')
        cls.dns.start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.close()

    def setUp(self):
        p = self.p = Postage().enter_for(self)
        p.add_domain('example.test')
        p.add_account('alice', 'pw-unused-2', 'alice@example.test')
        p.add_forward('list@example.test', 'carol@remote.example')
        p.add_forward('list@example.test', 'alice@example.test')
        p.add_relay_network('192.0.2.0/24')
        self.srv = p.serve(SMTP, ['--mode=mx'], host=SERVER)
        # Cleanups run last first: clients close, then these checks.
        self.addCleanup(self.final_checks)

    def final_checks(self):
        self.p.check_sanitizers()
        self.assertNotIn(BODY_MARKER, self.p.log_text())

    def client(self, source=OUTSIDE_CLIENT):
        c = smtplib.SMTP(SERVER, self.srv.port, timeout=30, source_address=(source, 0))
        self.addCleanup(smtp_quit, c)
        c.ehlo('mail.strict.example')
        return c

    def queue(self):
        """{sender: sorted recipients} of the queue."""
        out = {}
        for mid, sender in self.p.sql('SELECT id, sender FROM queue_messages'):
            rcpts = [r[0] for r in self.p.sql(
                'SELECT recipient FROM queue_recipients WHERE message_id = ?', mid)]
            self.assertTrue(os.path.exists(os.path.join(self.p.spool_dir, 'queue', mid)))
            out.setdefault(sender, []).extend(sorted(rcpts))
        return out

    def secret(self):
        rows = self.p.sql("SELECT value FROM settings WHERE key = 'srs_secret'")
        self.assertEqual(len(rows), 1, 'srs_secret was made and stored')
        self.assertGreaterEqual(len(rows[0][0]), 32)
        return rows[0][0]

    def test_forward_gets_srs_sender_that_passes_spf(self):
        c = self.client()
        c.sendmail('someone@strict.example', ['list@example.test'], msg())
        q = self.queue()
        self.assertEqual(len(q), 1, q)
        sender, rcpts = next(iter(q.items()))
        self.assertEqual(rcpts, ['carol@remote.example'])
        want = srs_address(self.secret(), 'someone', 'strict.example', 'example.test')
        self.assertEqual(sender, want)
        self.assertEqual(len(self.p.messages('alice')), 1, 'the local copy is delivered too')
        if spf is not None:
            # At the next hop, mail from our address 192.0.2.1: the original
            # sender fails SPF there, the SRS sender passes.
            self.assertEqual(spf.check2(i=SERVER, s='someone@strict.example',
                                        h='mx.test.example')[0], 'fail')
            self.assertEqual(spf.check2(i=SERVER, s=sender, h='mx.test.example')[0], 'pass')
        # The secret stays: a second forward uses the same one.
        secret = self.secret()
        c.sendmail('other@strict.example', ['list@example.test'], msg('other@strict.example'))
        self.assertEqual(self.secret(), secret)
        self.assertIn(srs_address(secret, 'other', 'strict.example', 'example.test'), self.queue())

    def test_configured_secret_is_used(self):
        self.p.set('srs_secret', 'a-configured-secret-of-some-length-1234')
        self.client().sendmail('someone@strict.example', ['list@example.test'], msg())
        want = srs_address('a-configured-secret-of-some-length-1234', 'someone',
                           'strict.example', 'example.test')
        self.assertEqual(list(self.queue()), [want])

    def test_relayed_and_forwarded_recipients_split(self):
        c = self.client(RELAY_CLIENT)
        c.sendmail('someone@strict.example', ['list@example.test', 'dave@elsewhere.example'],
                   msg())
        q = self.queue()
        srs = srs_address(self.secret(), 'someone', 'strict.example', 'example.test')
        self.assertEqual(q, {'someone@strict.example': ['dave@elsewhere.example'],
                             srs: ['carol@remote.example']})

    def test_our_own_and_null_senders_stay(self):
        c = self.client(RELAY_CLIENT)
        c.sendmail('alice@example.test', ['list@example.test'], msg('alice@example.test'))
        c.sendmail('', ['list@example.test'], msg('MAILER-DAEMON@strict.example'))
        self.assertEqual(self.queue(), {'alice@example.test': ['carol@remote.example'],
                                        '': ['carol@remote.example']})

    def test_bounce_to_srs_address_goes_back(self):
        self.p.set('srs_secret', 'bounce-secret-0123456789abcdef')
        addr = srs_address('bounce-secret-0123456789abcdef', 'someone', 'strict.example',
                           'example.test')
        c = self.client(OUTSIDE_CLIENT)
        c.sendmail('', [addr], b'From: MAILER-DAEMON@remote.example\r\nSubject: bounce\r\n\r\n'
                   + BODY_MARKER.encode() + b'\r\n')
        self.assertEqual(self.queue(), {'': ['someone@strict.example']})
        self.assertEqual(self.p.sql('SELECT orig_rcpt FROM queue_recipients')[0][0], addr)
        # An MTA on the way may change the case of the whole address.
        code, text = c.docmd('MAIL FROM:<>')
        self.assertEqual(code, 250)
        code, text = c.docmd(f'RCPT TO:<{addr.lower()}>')
        self.assertEqual(code, 250, text)
        c.rset()

    def test_forged_expired_and_malformed_are_refused(self):
        self.p.set('srs_secret', 'bounce-secret-0123456789abcdef')
        good = srs_address('bounce-secret-0123456789abcdef', 'someone', 'strict.example',
                           'example.test')
        forged = srs_address('another-secret', 'someone', 'strict.example', 'example.test')
        changed = good.replace('=someone@', '=victim@')
        old = srs_address('bounce-secret-0123456789abcdef', 'someone', 'strict.example',
                          'example.test', day=int(time.time() // 86400) - 30)
        c = self.client(OUTSIDE_CLIENT)
        self.assertEqual(c.docmd('MAIL FROM:<>')[0], 250)
        for addr, code, status in ((forged, 550, b'5.7.1'), (changed, 550, b'5.7.1'),
                                   (old, 550, b'5.1.1'),
                                   ('SRS0=nonsense@example.test', 550, b'5.7.1'),
                                   ('SRS0=AAAAAAAA=ZZ=x.example=y@example.test', 550, b'5.7.1')):
            got = c.docmd(f'RCPT TO:<{addr}>')
            self.assertEqual(got[0], code, (addr, got))
            self.assertTrue(got[1].startswith(status), (addr, got))
        # Someone else's domain: not ours to reverse, and no relay.
        self.assertEqual(c.docmd(f'RCPT TO:<{good.split("@")[0]}@remote.example>')[0], 554)
        self.assertEqual(c.docmd(f'RCPT TO:<{good}>')[0], 250)
        c.rset()
        log = self.p.log_text()
        self.assertIn('result=srs_forged', log)
        self.assertIn('result=srs_expired', log)

    def test_no_secret_means_every_srs_address_is_forged(self):
        addr = srs_address('whatever', 'someone', 'strict.example', 'example.test')
        c = self.client(OUTSIDE_CLIENT)
        c.docmd('MAIL FROM:<>')
        self.assertEqual(c.docmd(f'RCPT TO:<{addr}>')[0], 550)
        self.assertEqual(self.p.sql("SELECT count(*) FROM settings WHERE key = 'srs_secret'"),
                         [(0,)], 'a refusal does not make a secret')

    def test_long_srs_address_round_trip(self):
        """SRS addresses often pass the 64 octets of RFC 5321 4.5.3.1.1;
        we make and accept them up to the 256-octet path."""
        local = 'a-rather-long-local-part.for-newsletters'
        domain = 'bounces.mail.strict.example'
        self.dns.txt(domain, 'v=spf1 ip4:198.51.100.7 -all')
        c = self.client(OUTSIDE_CLIENT)
        c.sendmail(f'{local}@{domain}', ['list@example.test'], msg())
        srs = srs_address(self.secret(), local, domain, 'example.test')
        self.assertGreater(len(srs.split('@')[0]), 64)
        self.assertEqual(self.queue(), {srs: ['carol@remote.example']})
        c.sendmail('', [srs], b'Subject: bounce\r\n\r\n' + BODY_MARKER.encode() + b'\r\n')
        self.assertEqual(self.queue()[''], [f'{local}@{domain}'])
        # ...and an SRS sender from another forwarder, as long, is accepted.
        other = 'SRS0=abcd=TT=' + 'x' * 60 + '.example=someone@forwarder.example'
        self.assertEqual(c.docmd(f'MAIL FROM:<{other}>')[0], 250)
        c.rset()
        # Only SRS gets the longer local part.
        self.assertEqual(c.docmd('MAIL FROM:<' + 'x' * 70 + '@strict.example>')[0], 501)


class SrsEndToEndTest(unittest.TestCase):
    """Through the real queue runner: the forwarded copy reaches the
    remote MX with an SRS sender whose SPF passes for the address postage
    sends from, its DKIM signature intact; the remote refuses it, and the
    bounce, sent to the SRS address, comes back to the original sender's
    MX."""

    def setUp(self):
        try:
            from test_queue import RUNNER, Sink, run_queue
        except ImportError as e:  # the queue runner's tests are not here
            self.skipTest(f'test_queue helpers unavailable: {e}')
        self.run_queue = run_queue
        self.p = Postage().enter_for(self)
        try:
            self.p.binary(RUNNER)
        except FileNotFoundError:
            self.skipTest('queue-runner is not built')
        p = self.p
        p.add_domain('example.test')
        p.add_forward('list@example.test', 'carol@remote.example')
        self.remote = Sink(host='203.0.113.25', port=25)
        self.addCleanup(self.remote.stop)
        self.origin = Sink(host='203.0.113.26', port=25)
        self.addCleanup(self.origin.stop)
        self.dns = netns.DnsServer()
        self.addCleanup(self.dns.close)
        # postage sends from 203.0.113.1 (the source the kernel picks for
        # 203.0.113.25 here); example.test's SPF names it.
        self.dns.txt('example.test', 'v=spf1 ip4:203.0.113.1 ip4:192.0.2.1 -all')
        self.dns.txt('strict.example', 'v=spf1 ip4:198.51.100.7 -all')
        self.dns.mx('remote.example', 'mx.remote.example')
        self.dns.a('mx.remote.example', '203.0.113.25')
        self.dns.mx('strict.example', 'mx.strict.example')
        self.dns.a('mx.strict.example', '203.0.113.26')
        self.srv = p.serve(SMTP, ['--mode=mx'], host=SERVER)
        self.addCleanup(p.check_sanitizers)

    def test_forward_and_bounce_round_trip(self):
        try:
            import dkim as dkimmod
        except ImportError:
            self.skipTest('python3-dkim is not installed')
        key = subprocess.run(['openssl', 'genrsa', '-traditional', '2048'], capture_output=True,
                             check=True).stdout
        pub = subprocess.run(['openssl', 'rsa', '-pubout', '-outform', 'DER'], input=key,
                             capture_output=True, check=True).stdout
        self.dns.txt('s1._domainkey.strict.example',
                     'v=DKIM1; k=rsa; p=' + base64.b64encode(pub).decode())
        self.dns.start()
        body = msg().replace(b'To: list@example.test', b'To: List <list@example.test>')
        signed = dkimmod.sign(body, b's1', b'strict.example', key,
                              include_headers=[b'from', b'to', b'subject', b'message-id'])
        signed += body
        c = smtplib.SMTP(SERVER, self.srv.port, timeout=30, source_address=(OUTSIDE_CLIENT, 0))
        c.ehlo('mail.strict.example')
        c.sendmail('someone@strict.example', ['list@example.test'], signed)
        c.quit()
        self.remote.handler.rules['carol@remote.example'] = '550 5.1.1 no such user carol'
        self.run_queue(self.p)
        got = self.remote.handler.rcpt_attempts
        self.assertEqual([a for _, a, _ in got], ['carol@remote.example'])
        self.assertIn('event=srs result=rewritten', self.p.log_text())
        sender = self.p.sql('SELECT sender FROM queue_messages')
        # The refusal makes a bounce to the SRS address, which goes back
        # to the original sender's MX (in this run or the next).
        for _ in range(3):
            if self.origin.messages:
                break
            self.run_queue(self.p)
        self.assertEqual(len(self.origin.messages), 1, (sender, self.p.log_text()[-3000:]))
        bounce = self.origin.messages[0]
        self.assertEqual(bounce['mail_from'], '<>')
        self.assertEqual(bounce['rcpts'], ['someone@strict.example'])
        self.assertIn(b'no such user carol', bounce['content'])
        # Now the accepted case: the remote takes it.
        self.remote.handler.rules.clear()
        c = smtplib.SMTP(SERVER, self.srv.port, timeout=30, source_address=(OUTSIDE_CLIENT, 0))
        c.ehlo('mail.strict.example')
        c.sendmail('someone@strict.example', ['list@example.test'], signed)
        c.quit()
        self.run_queue(self.p)
        self.assertEqual(len(self.remote.messages), 1)
        m = self.remote.messages[0]
        mail_from = m['mail_from']
        self.assertTrue(mail_from.startswith('SRS0=') and mail_from.endswith('@example.test'),
                        mail_from)
        peer_ip = m['peer'][0]
        if spf is not None:
            self.assertEqual(spf.check2(i=peer_ip, s=mail_from, h='mx.test.example')[0], 'pass',
                             (peer_ip, mail_from))
            self.assertEqual(spf.check2(i=peer_ip, s='someone@strict.example',
                                        h='mx.test.example')[0], 'fail')
        # Forwarded as it came: the original DKIM signature still verifies.
        content = m['content'].replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')

        def dnsfunc(name, timeout=5):
            return ('v=DKIM1; k=rsa; p=' + base64.b64encode(pub).decode()).encode()
        self.assertTrue(dkimmod.verify(content, dnsfunc=dnsfunc))


if __name__ == '__main__':
    netns.main()
