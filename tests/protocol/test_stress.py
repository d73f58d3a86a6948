"""Slow sessions make way under load (shared/stress.h): once a line has
taken 10 seconds (2 once part of it came) the session counts as slow, and while more sessions than
slow_sessions_max (SMTP and POP3 together) are slow, the ones that look
give up with the protocol's timeout reply. Under the limit a slow session
waits the full line timeout as RFC 5321 4.5.3.2.7 asks."""
import socket
import time
import unittest

from harness import Postage

SLOW_MS = 10  # seconds: STRESS_SLOW_MS


def connect(srv):
    s = socket.create_connection((srv.host, srv.port), timeout=30)
    greeting = s.recv(4096)
    return s, greeting


def reply_within(s, seconds):
    """What the server says within seconds (b'' when nothing; None when it
    closed without a word)."""
    s.settimeout(seconds)
    try:
        data = s.recv(4096)
    except socket.timeout:
        return b''
    return data if data else None


class Stress(unittest.TestCase):
    def setUp(self):
        self.p = Postage().enter_for(self)
        self.p.add_domain('example.test')
        self.p.add_account('alice', 'stress-password', 'alice@example.test')
        self.smtp = self.p.serve('smtp-handler/smtp-handler', ['--mode=mx'])
        self.pop3 = self.p.serve('pop3-handler/pop3-handler')

    def tearDown(self):
        self.p.check_sanitizers()

    def assert_answers_only_after(self, sock, quiet, rest, reply):
        """Nothing comes on sock for quiet seconds; once rest (the rest of
        a command) is sent, a reply starting with reply comes."""
        self.assertEqual(reply_within(sock, quiet), b'')
        sock.sendall(rest)
        self.assertTrue(reply_within(sock, 10).startswith(reply))

    def assert_all_wait_then_answer(self, conns, rest):
        """No connection of conns is cut while slow (nothing comes for the
        slow time and more); then rest ends each one's command with 250,
        and each is closed."""
        for s in conns:
            self.assertEqual(reply_within(s, SLOW_MS + 6), b'')
        for s in conns:
            s.sendall(rest)
            self.assertTrue(reply_within(s, 10).startswith(b'250 '))
            s.close()

    def test_under_the_limit_slow_sessions_wait(self):
        self.p.set('slow_sessions_max', 2)
        conns = [connect(self.smtp)[0] for _ in range(2)]
        # A line begun and not finished: slow, but only two of them.
        for s in conns:
            s.sendall(b'NO')
        self.assert_all_wait_then_answer(conns, b'OP\r\n')

    def test_over_the_limit_the_extra_ones_are_cut(self):
        self.p.set('slow_sessions_max', 2)
        conns = []
        for _ in range(4):
            conns.append(connect(self.smtp)[0])
            time.sleep(0.3)
        t0 = time.monotonic()
        heard = [reply_within(s, max(0.1, SLOW_MS + 8 - (time.monotonic() - t0))) for s in conns]
        cut = [h for h in heard if h and h.startswith(b'421 4.4.2 ')]
        self.assertEqual(len(cut), 2, heard)
        # The two that stayed still work.
        alive = [s for s, h in zip(conns, heard) if h == b'']
        self.assertEqual(len(alive), 2, heard)
        for s in alive:
            s.sendall(b'NOOP\r\n')
            self.assertTrue(reply_within(s, 10).startswith(b'250 '))
        for s in conns:
            s.close()
        self.assertIn('event=stress result=cut', self.p.log_text())

    def test_a_trickled_line_is_slow_after_two_seconds(self):
        # Part of a line and then nothing (slowloris): slow after 2 s,
        # not 10.
        self.p.set('slow_sessions_max', 1)
        first, _ = connect(self.smtp)
        first.sendall(b'NO')
        time.sleep(0.3)
        second, _ = connect(self.smtp)
        second.sendall(b'NO')
        t0 = time.monotonic()
        said = reply_within(second, 8)
        self.assertTrue(said and said.startswith(b'421 4.4.2 '), said)
        self.assertLess(time.monotonic() - t0, 5)
        self.assert_answers_only_after(first, 0.5, b'OP\r\n', b'250 ')
        first.close()
        second.close()

    def test_smtp_and_pop3_count_together(self):
        self.p.set('slow_sessions_max', 1)
        smtp, _ = connect(self.smtp)
        time.sleep(0.5)
        pop3, greeting = connect(self.pop3)
        self.assertTrue(greeting.startswith(b'+OK'), greeting)
        said = reply_within(pop3, SLOW_MS + 8)
        self.assertTrue(said and said.startswith(b'-ERR'), said)
        self.assert_answers_only_after(smtp, 1, b'QUIT\r\n', b'221 ')
        smtp.close()
        pop3.close()

    def test_zero_turns_it_off(self):
        self.p.set('slow_sessions_max', 0)
        conns = [connect(self.smtp)[0] for _ in range(2)]
        self.assert_all_wait_then_answer(conns, b'NOOP\r\n')


if __name__ == '__main__':
    unittest.main()
