"""smtp-handler --mode=mx: no relaying, whatever the address looks like."""
import os
import unittest

from smtp_base import SmtpTestCase, new_message

# Addresses whose real destination is a domain we do not host, however it
# is dressed up: each must be refused with a 5xx at RCPT.
MUST_REFUSE = [
    '<u@elsewhere.test>',
    '<U@ELSEWHERE.TEST>',
    '<u@localhost>',
    '<u@mx.test.example>',                          # our host name, not a hosted domain
    '<@example.test:u@elsewhere.test>',              # source route through a hosted domain
    '<@example.test,@other.test:u@elsewhere.test>',  # longer source route
    '<"alice@example.test"@elsewhere.test>',         # quoted @
    '<"u"@elsewhere.test>',
    '<example.test!alice@elsewhere.test>',           # bang path
    '<u@[127.0.0.1]>',                               # address literals, even our own
    '<postmaster@[127.0.0.1]>',
    '<u@[IPv6:::1]>',
    '<u@elsewhere.test.>',                           # trailing dot
    '<alice@elsewhere.test%example.test>',           # percent hack in the domain
    '<u@elsewhere.test@example.test>',
    '<u@example.test@elsewhere.test>',
    '<u@elsewhere.test\\>',
]

# Tricks aimed at a hosted domain: refused, or delivered locally (to the
# catch-all); never queued for another host.
LOCAL_OR_REFUSED = [
    '<alice%elsewhere.test@example.test>',           # percent hack
    '<u%elsewhere.test@catch.test>',
    '<"u@elsewhere.test"@example.test>',             # quoted @
    '<"u@elsewhere.test"@catch.test>',
    '<elsewhere.test!u@example.test>',               # bang path
    '<elsewhere.test!u@catch.test>',
    '<@elsewhere.test:alice@example.test>',          # source route ending here
    '<alice@example.test.>',                         # trailing dot
    '<u@catch.test.>',
]


class Relay(SmtpTestCase):
    def test_relay_refused_from_loopback(self):
        # A fresh schema trusts nothing, loopback included.
        self.assertEqual(self.p.sql('SELECT count(*) FROM relay_networks')[0][0], 0)
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)
        code, text = c.cmd('RCPT TO:<someone@elsewhere.test>')
        self.assertEqual(code, 554, text)
        self.assertTrue(text[0].startswith('5.7.1'), text)
        self.assertIn('elsewhere.test', text[0])
        self.assertIn('<someone@elsewhere.test>: relay access denied', text[0])
        code, text = c.cmd('DATA')
        self.assertEqual(code // 100, 5, text)
        self.assertEqual(c.cmd('NOOP')[0], 250)
        self.assertIn('relay_denied', self.p.log_text())
        self.assert_nothing_queued()
        self.assert_no_mail()

    def test_address_tricks_refused(self):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        for addr in MUST_REFUSE:
            code, text = c.cmd('RCPT TO:' + addr)
            self.assertIn(code, (501, 550, 553, 554), (addr, text))
        # nothing was taken: DATA has no recipient
        code, text = c.cmd('DATA')
        self.assertEqual(code // 100, 5, text)
        self.assert_nothing_queued()
        self.assert_no_mail()

    def test_address_tricks_on_hosted_domains_stay_local(self):
        c = self.session()
        accepted = 0
        for addr in LOCAL_OR_REFUSED:
            self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
            code, text = c.cmd('RCPT TO:' + addr)
            self.assertIn(code, (250, 501, 550, 553, 554), (addr, text))
            if code == 250:
                before = len(self.all_messages())
                self.send_data(c, new_message())
                self.assertEqual(len(self.all_messages()), before + 1, addr)
                accepted += 1
            else:
                self.assertEqual(c.cmd('RSET')[0], 250)
            self.assert_nothing_queued()
        # the catch-all takes some of them: that is local delivery
        self.assertEqual(len(self.all_messages()), accepted)
        self.assertEqual(self.p.messages('bob'), [])

    def test_source_route_to_hosted_domain_delivers_to_final_mailbox(self):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        code, text = c.cmd('RCPT TO:<@elsewhere.test,@other.test:alice@example.test>')
        if code != 250:
            self.assertEqual(code // 100, 5, text)
            return
        self.send_data(c, new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assert_nothing_queued()

    def test_hosted_domain_in_any_case_delivers(self):
        c = self.session()
        for rcpt in ('alice@EXAMPLE.TEST', 'alice@Other.Test', 'x@CATCH.test'):
            self.transaction(c, 's@remote.example', [rcpt], new_message())
        self.assertEqual(len(self.p.messages('alice')), 2)
        self.assertEqual(len(self.p.messages('carol')), 1)
        self.assert_nothing_queued()

    def test_relay_networks_opens_relaying_to_the_real_destination(self):
        # The other side of the rule: a trusted network may relay, and the
        # queue gets the address's real destination.
        self.p.add_relay_network('127.0.0.0/8')
        c = self.session()
        self.transaction(c, 's@remote.example',
                         ['<@example.test:u@elsewhere.test>'[1:-1], 'alice@example.test'],
                         new_message())
        rows = self.p.sql('SELECT recipient FROM queue_recipients')
        self.assertEqual(rows, [('u@elsewhere.test',)])
        self.assertEqual(len(self.p.messages('alice')), 1)
        qid = self.p.sql('SELECT id FROM queue_messages')[0][0]
        with open(os.path.join(self.p.spool_dir, 'queue', qid), 'rb') as f:
            data = f.read()
        self.assertTrue(data.startswith(b'Received: '), data[:200])
        self.assertNotIn(b'\r\n', data)


if __name__ == '__main__':
    unittest.main()
