"""smtp-handler --mode=mx: the command dialogue (RFC 5321, 2920, 2034)."""
import re
import unittest

from smtp_base import SmtpTestCase, new_message, wire

ENHANCED = re.compile(r'^[245]\.\d{1,3}\.\d{1,3}( |$)')


class Dialogue(SmtpTestCase):
    def test_greeting_and_ehlo_keywords(self):
        c = self.connect(greet=False)
        code, text = c.reply()
        self.assertEqual(code, 220)
        self.assertRegex(text[0], r'^mx\.test\.example ESMTP\b')
        code, lines = c.cmd('EHLO client.example')
        self.assertEqual(code, 250)
        self.assertEqual(lines[0], 'mx.test.example')
        keywords = {l.split()[0].upper(): l.split()[1:] for l in lines[1:]}
        for k in ('PIPELINING', 'SIZE', '8BITMIME', 'ENHANCEDSTATUSCODES', 'SMTPUTF8'):
            self.assertIn(k, keywords)
        self.assertEqual(keywords['SIZE'], ['26214400'])
        self.p.set('max_message_bytes', 12345)
        c2 = self.session()
        code, lines = c2.cmd('EHLO again.example')
        self.assertIn('SIZE 12345', lines)
        # no AUTH offered to an untrusted client on port 25 without TLS
        self.assertNotIn('AUTH', keywords)

    def test_helo(self):
        c = self.connect()
        code, text = c.cmd('HELO client.example')
        self.assertEqual(code, 250)
        self.assertEqual(text, ['mx.test.example'])
        code, text = c.cmd('HELO')
        self.assertEqual(code, 501, text)

    def test_verbs_case_insensitive_and_enhanced_codes(self):
        c = self.connect()
        replies = [
            c.cmd('ehlo client.example'),
            c.cmd('mail from:<s@remote.example> body=8bitmime'),
            c.cmd('Rcpt To:<alice@example.test>'),
            c.cmd('noop'),
            c.cmd('vrfy alice'),
            c.cmd('help'),
            c.cmd('rset'),
            c.cmd('Rcpt To:<alice@example.test>'),
            c.cmd('FOO bar'),
            c.cmd('mail from:<s@remote.example> SIZE=abc'),
            c.cmd('mail from:<s@remote.example> FOO=bar'),
            c.cmd('quit'),
        ]
        codes = [r[0] for r in replies]
        self.assertEqual(codes, [250, 250, 250, 250, 252, 214, 250, 503, 500, 501, 555, 221])
        for code, text in replies[1:]:
            for line in text:
                self.assertRegex(line, ENHANCED, (code, text))
        self.assertTrue(c.closed())

    def test_commands_before_helo(self):
        c = self.connect()
        code, text = c.cmd('MAIL FROM:<s@remote.example>')
        self.assertEqual(code, 503, text)
        self.assertEqual(c.cmd('NOOP')[0], 250)

    def test_rset_forgets_the_transaction(self):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<alice@example.test>')[0], 250)
        code, text = c.cmd('RSET')
        self.assertEqual(code, 250)
        self.assertTrue(text[0].startswith('2.0.0'), text)
        # the sender is gone: RCPT needs a new MAIL
        self.assertEqual(c.cmd('RCPT TO:<bob@example.test>')[0], 503)
        self.assertEqual(c.cmd('DATA')[0] // 100, 5)
        # a new transaction after RSET: alice (before RSET) gets nothing
        self.transaction(c, 'other@remote.example', ['bob@example.test'], new_message())
        self.assertEqual(self.p.messages('alice'), [])
        data = self.read(self.p.messages('bob')[0])
        self.assertTrue(data.startswith(b'Return-Path: <other@remote.example>\n'))
        # a second MAIL without RSET is refused (nested)
        self.assertEqual(c.cmd('MAIL FROM:<a@remote.example>')[0], 250)
        self.assertEqual(c.cmd('MAIL FROM:<b@remote.example>')[0], 503)

    def test_pipelining_everything_in_one_send(self):
        msg = new_message()
        c = self.connect(greet=False)
        c.send(b'EHLO client.example\r\n'
               b'MAIL FROM:<s@remote.example>\r\n'
               b'RCPT TO:<alice@example.test>\r\n'
               b'RCPT TO:<nobody@example.test>\r\n'
               b'RCPT TO:<u@elsewhere.test>\r\n'
               b'RCPT TO:<bob@example.test>\r\n'
               b'DATA\r\n' + wire(msg) +
               b'MAIL FROM:<t@remote.example>\r\n'
               b'RCPT TO:<carol@catch.test>\r\n'
               b'DATA\r\n' + wire(msg) +
               b'NOOP\r\n'
               b'QUIT\r\n')
        codes = [c.reply()[0] for _ in range(14)]
        self.assertEqual(codes, [220, 250, 250, 250, 550, 554, 250, 354, 250, 250, 250, 354, 250,
                                 250])
        self.assertEqual(c.reply()[0], 221)
        self.assertTrue(c.closed())
        for login in ('alice', 'bob', 'carol'):
            self.assertEqual(len(self.p.messages(login)), 1, login)
        self.assert_nothing_queued()

    def test_many_pipelined_commands(self):
        # Every command that arrived together is answered, in order,
        # without the client sending anything more.
        c = self.connect()
        c.send(b''.join(b'NOOP\r\n' for _ in range(50)) + b'RSET\r\n')
        for _ in range(50):
            self.assertEqual(c.reply()[0], 250)
        code, text = c.reply()
        self.assertEqual(code, 250)
        self.assertTrue(text[0].startswith('2.0.0'))

    def test_command_line_limit(self):
        c = self.session()
        # 512 octets with CRLF is allowed (RFC 5321 4.5.3.1.4)
        line = 'NOOP ' + 'a' * (510 - 5)
        self.assertEqual(len(line) + 2, 512)
        self.assertEqual(c.cmd(line)[0], 250)
        # 513 is not
        code, text = c.cmd(line + 'a')
        self.assertEqual(code, 500, text)
        self.assertTrue(text[0].startswith('5.5.2'), text)
        # The rest of a long line is thrown away, not read as a command,
        # wherever the cut falls.
        for n in range(507, 521):  # the line is n + 6 octets
            c.send('NOOP ' + 'x' * (n - 5) + 'QUIT\r\n')
            code, text = c.reply()
            self.assertEqual(code, 500, (n, text))
            self.assertEqual(c.cmd('NOOP')[0], 250, n)
        # and a very long one
        c.send('RSET ' + 'y' * 100000 + 'QUIT\r\n')
        self.assertEqual(c.reply()[0], 500)
        # the session goes on
        self.assertEqual(c.cmd('NOOP')[0], 250)

    def test_bad_command_limit(self):
        c = self.connect()
        c.send(b'BOGUS\r\n' * 40)
        codes = []
        while True:
            try:
                code, text = c.reply()
            except EOFError:
                break
            codes.append(code)
        self.assertEqual(codes[-1], 421, codes)
        self.assertTrue(all(x == 500 for x in codes[:-1]), codes)
        self.assertGreaterEqual(len(codes) - 1, 5)
        self.assertLess(len(codes) - 1, 40)
        self.assertTrue(c.closed())

    def test_good_commands_do_not_count_as_bad(self):
        c = self.session()
        for _ in range(60):
            self.assertEqual(c.cmd('NOOP')[0], 250)
        self.assertEqual(c.cmd('QUIT')[0], 221)


class Smuggling(SmtpTestCase):
    """Only <CRLF>.<CRLF> ends DATA; bare LF or CR is refused after the
    real end, nothing is delivered, and the session goes on."""

    def smuggle(self, fake_end):
        c = self.session()
        self.start_data(c)
        c.send(b'Subject: smuggle\r\n\r\nfirst part' + fake_end +
               b'MAIL FROM:<evil@remote.example>\r\n'
               b'RCPT TO:<bob@example.test>\r\n'
               b'DATA\r\n'
               b'Subject: smuggled\r\n\r\nsmuggled body\r\n'
               b'.\r\n')
        code, text = c.reply()
        self.assertEqual(code // 100, 5, (fake_end, code, text))
        # the smuggled commands were data: no reply to them is waiting
        c.send(b'NOOP\r\n')
        code, text = c.reply()
        self.assertEqual(code, 250, (fake_end, text))
        self.assertEqual(self.all_messages(), [], fake_end)
        # the session goes on and works
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(self.p.messages('bob'), [])
        self.assertEqual(c.cmd('QUIT')[0], 221)

    def test_lf_dot_lf(self):
        self.smuggle(b'\n.\n')

    def test_crlf_dot_lf(self):
        self.smuggle(b'\r\n.\n')

    def test_lf_dot_crlf(self):
        self.smuggle(b'\n.\r\n')

    def test_cr_dot_cr(self):
        self.smuggle(b'\r.\r')

    def test_cr_dot_crlf(self):
        self.smuggle(b'\r.\r\n')

    def test_bare_lf_in_headers(self):
        self.smuggle(b'\nX-Header: bare\r\n')

    def test_bare_cr_in_body(self):
        self.smuggle(b'\rmore\r\n')


if __name__ == '__main__':
    unittest.main()
