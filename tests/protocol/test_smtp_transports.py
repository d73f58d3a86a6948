"""smtp-handler --mode=mx under each supervisor and transport: systemd
socket activation over IPv4 and IPv6, a real xinetd, and two plain pipes."""
import re
import unittest

from smtp_base import SMTP, Raw, SmtpTestCase, new_message, stored


class IPv6(SmtpTestCase):
    host = '::1'

    def test_ipv6_peer(self):
        self.assertEqual(self.srv.host, '::1')
        msg = new_message()
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test'], msg)
        self.assertEqual(c.cmd('QUIT')[0], 221)
        (_, _, rcvd), rest = self.split_prefix(self.only_message('alice'))
        # RFC 5321 4.1.3: an IPv6 address literal is [IPv6:...]
        self.assertIn(b'([IPv6:::1])', rcvd)
        self.assertEqual(rest, stored(msg))
        self.assertRegex(self.p.log_text(), r'event=connect ip=::1 ')
        self.assertRegex(self.p.log_text(), r'event=message result=accepted .*ip=::1 ')

    def test_ipv6_relay_refused(self):
        c = self.session()
        c.cmd('MAIL FROM:<s@remote.example>')
        self.assertEqual(c.cmd('RCPT TO:<u@elsewhere.test>')[0], 554)
        # a relay network for IPv4 loopback does not cover ::1
        self.p.add_relay_network('127.0.0.0/8')
        c = self.session()
        c.cmd('MAIL FROM:<s@remote.example>')
        self.assertEqual(c.cmd('RCPT TO:<u@elsewhere.test>')[0], 554)
        self.p.add_relay_network('::1/128')
        c = self.session()
        c.cmd('MAIL FROM:<s@remote.example>')
        self.assertEqual(c.cmd('RCPT TO:<u@elsewhere.test>')[0], 250)


class Xinetd(SmtpTestCase):
    supervisor = 'xinetd'

    def test_delivery_under_xinetd(self):
        msg = new_message()
        s = self.smtp()
        s.ehlo('client.example')
        self.assertEqual(s.sendmail('s@remote.example', ['list@example.test'],
                                    msg.replace(b'\n', b'\r\n')), {})
        s.quit()
        for login in ('alice', 'bob'):
            (rp, dt, rcvd), rest = self.split_prefix(self.only_message(login))
            self.assertEqual(dt, b'Delivered-To: list@example.test')
            self.assertIn(b'[127.0.0.1]', rcvd)
            self.assertEqual(rest, stored(msg))
        self.assertRegex(self.p.log_text(), r'event=connect ip=127\.0\.0\.1 ')

    def test_two_connections_at_once(self):
        a = self.session('a.example')
        b = self.session('b.example')
        self.transaction(b, 's@remote.example', ['bob@example.test'], new_message())
        self.transaction(a, 's@remote.example', ['alice@example.test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(len(self.p.messages('bob')), 1)


class Pipes(SmtpTestCase):
    start_server = False

    def test_session_on_two_pipes(self):
        proc = self.p.spawn(SMTP, ['--mode=mx'])
        try:
            c = Raw(rfile=proc.stdout, wfile=proc.stdin)
            code, text = c.reply()
            self.assertEqual(code, 220, text)
            self.assertEqual(c.cmd('EHLO pipe.example')[0], 250)
            msg = new_message()
            self.transaction(c, 's@remote.example', ['alice@example.test', 'bob@example.test'], msg)
            # the peer is local, and local is not trusted to relay either
            c.cmd('MAIL FROM:<s@remote.example>')
            self.assertEqual(c.cmd('RCPT TO:<u@elsewhere.test>')[0], 554)
            self.assertEqual(c.cmd('QUIT')[0], 221)
            self.assertEqual(proc.stdout.read(), b'')
            self.assertEqual(proc.wait(timeout=30), 0)
            self.assertEqual(proc.stderr.read(), b'')
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                f.close()
        for login in ('alice', 'bob'):
            (_, _, rcvd), rest = self.split_prefix(self.only_message(login))
            self.assertTrue(rcvd.startswith(b'Received: from pipe.example (local)'), rcvd)
            self.assertEqual(rest, stored(msg))
        self.assertIn('event=connect ip=local', self.p.log_text())

    def test_pipes_eof_mid_session(self):
        r = self.p.run(SMTP, ['--mode=mx'],
                       input=b'EHLO x.example\r\nMAIL FROM:<s@remote.example>\r\n'
                             b'RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: cut\r\n\r\nhalf')
        codes = re.findall(rb'^(\d{3})[ ]', r.stdout, re.M)
        self.assertEqual(codes, [b'220', b'250', b'250', b'250', b'354'])
        self.assertEqual(r.stderr, b'')
        self.assertEqual(self.p.messages('alice'), [])


if __name__ == '__main__':
    unittest.main()
