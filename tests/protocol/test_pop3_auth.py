"""pop3-handler: logins (each password scheme, disabled mailboxes, unknown
users, the throttle), POP-before-SMTP records, and the mailbox lock."""
import os
import signal
import time
import unittest

import harness
from harness import main
from pop3_base import PASSWORD, Pop3TestCase, median, new_message

FAILED = '-ERR [AUTH] Authentication failed'


class Schemes(Pop3TestCase):
    def test_each_password_scheme(self):
        for scheme in ('yescrypt', 'sha512crypt', 'bcrypt'):
            login = 'u-' + scheme
            self.p.add_mailbox(login, 'right ' + scheme, scheme=scheme)
            prefix = {'yescrypt': '$y$', 'sha512crypt': '$6$', 'bcrypt': '$2'}[scheme]
            stored = self.p.sql('SELECT password FROM mailboxes WHERE login = ?', login)[0][0]
            self.assertTrue(stored.startswith(prefix), stored)
            c = self.connect()
            self.assertEqual(c.login(login, 'wrong ' + scheme), FAILED, scheme)
            r = c.login(login, 'right ' + scheme)
            self.assertTrue(r.startswith('+OK Logged in'), f'{scheme}: {r!r}')
            self.assertTrue(c.cmd('QUIT').startswith('+OK'))
            self.assertTrue(self.log_events(event='login', result='ok', login=login))

    def test_password_with_spaces(self):
        self.p.add_mailbox('spacey', ' two  words ')
        c = self.connect()
        self.assertEqual(c.login('spacey', 'two  words'), FAILED)
        r = c.login('spacey', ' two  words ')
        self.assertTrue(r.startswith('+OK'), r)

    def test_login_is_exact(self):
        c = self.connect()
        self.assertEqual(c.login('ALICE', PASSWORD), FAILED)
        self.assertEqual(c.login('alice@example.test', PASSWORD), FAILED)


class Refusals(Pop3TestCase):
    def test_disabled_mailbox_refused_like_wrong_password(self):
        self.p.add_mailbox('gone', 'pw-gone', enabled=0)
        c = self.connect()
        self.assertEqual(c.login('gone', 'pw-gone'), FAILED)
        self.assertEqual(c.login('nosuchuser', 'pw-gone'), FAILED)
        self.assertEqual(c.login('alice', 'not the password'), FAILED)
        self.assertTrue(c.closed())
        self.assertTrue(self.log_events(event='login', result='disabled', login='gone'))
        self.assertTrue(self.log_events(event='login', result='failed', login='nosuchuser'))
        self.assertEqual(self.p.sql('SELECT count(*) FROM pop_logins')[0][0], 0)

    def test_failures_per_session_then_hang_up(self):
        c = self.connect()
        self.assertEqual(c.login('alice', 'bad1'), FAILED)
        self.assertEqual(c.login('alice', 'bad2'), FAILED)
        self.assertEqual(c.login('alice', 'bad3'), FAILED)
        self.assertTrue(c.closed())
        self.assertTrue(self.log_events(event='disconnect', result='auth_failures'))
        # The failures were counted for the address, across processes.
        rows = self.p.sql('SELECT ip_key, failures FROM auth_failures')
        self.assertEqual(rows, [('127.0.0.1', 3)])

    def test_throttled_address_refused_unchecked(self):
        now = int(time.time())
        self.p.sql('INSERT INTO auth_failures VALUES (?, 20, ?, ?)', '127.0.0.1', now, now)
        c = self.connect()
        self.assertEqual(c.cmd('USER alice'), '+OK Send your password')
        r = c.cmd(f'PASS {PASSWORD}')
        self.assertTrue(r.startswith('-ERR [AUTH] Too many failed logins'), r)
        self.assertTrue(c.closed())
        self.assertTrue(self.log_events(event='login', result='throttled'))
        self.assertEqual(self.p.sql('SELECT count(*) FROM pop_logins')[0][0], 0)

    def test_success_does_not_clear_failures(self):
        c = self.connect()
        self.assertEqual(c.login('alice', 'bad'), FAILED)
        self.assertTrue(c.login().startswith('+OK'))
        self.assertEqual(self.p.sql('SELECT failures FROM auth_failures'), [(1,)])

    def test_parallel_logins_from_one_address_do_not_wait(self):
        # A mail client opening its accounts at once, users behind one NAT:
        # checks under way hold throttle slots, but are not failures, so
        # none waits the throttle's second and none is refused.
        import concurrent.futures
        self.p.set('auth_failure_delay_ms', '0')
        for i in range(15):
            self.p.add_mailbox(f'par{i}', f'pw-par-{i}')

        def login(i):
            c = self.connect()
            t0 = time.monotonic()
            r = c.login(f'par{i}', f'pw-par-{i}')
            took = time.monotonic() - t0
            c.cmd('QUIT')
            return r, took

        with concurrent.futures.ThreadPoolExecutor(max_workers=15) as ex:
            results = list(ex.map(login, range(15)))
        for r, took in results:
            self.assertTrue(r.startswith('+OK Logged in'), r)
            self.assertLess(took, 1.0, 'a parallel login waited for the throttle')
        self.assertEqual(self.p.sql('SELECT * FROM auth_failures'), [])
        self.assertEqual(self.p.sql('SELECT count(*) FROM auth_pending')[0][0], 0)

    def test_checks_under_way_count_toward_the_cap(self):
        # Twenty checks under way (as twenty parallel guesses would hold)
        # fill the address's slots: the next attempt is not checked. Slots
        # a dead process left (older than a minute) count no more.
        now = int(time.time())
        for _ in range(20):
            self.p.sql('INSERT INTO auth_pending (ip_key, at) VALUES (?, ?)', '127.0.0.1', now)
        c = self.connect()
        c.cmd('USER alice')
        r = c.cmd(f'PASS {PASSWORD}')
        self.assertTrue(r.startswith('-ERR [AUTH] Too many failed logins'), r)
        self.p.sql('UPDATE auth_pending SET at = ?', now - 120)
        c = self.connect()
        self.assertTrue(c.login().startswith('+OK Logged in'))

    def test_unknown_user_timing(self):
        # Make the stored hash dear enough that it dominates the timing.
        self.p.sql('DELETE FROM mailboxes')
        self.p.add_mailbox('alice', PASSWORD, scheme='yescrypt')

        def attempt(user):
            self.p.sql('DELETE FROM auth_failures')  # keep the throttle out of it
            c = self.connect()
            self.assertEqual(c.cmd(f'USER {user}'), '+OK Send your password')
            t0 = time.perf_counter()
            r = c.cmd('PASS wrong-password')
            dt = time.perf_counter() - t0
            self.assertEqual(r, FAILED)
            c.cmd('QUIT')
            c.close()
            return dt

        known, unknown = [], []
        for _ in range(7):
            known.append(attempt('alice'))
            unknown.append(attempt('nobody-here'))
        mk, mu = median(known), median(unknown)
        # Loosely: an unknown login costs a hash too, not a fraction of one.
        self.assertGreater(mu, 0.5 * mk, f'known {known} unknown {unknown}')
        self.assertLess(mu, 2.0 * mk, f'known {known} unknown {unknown}')


class PopBeforeSmtp(Pop3TestCase):
    def test_pop_logins_row(self):
        before = int(time.time())
        c = self.session()
        rows = self.p.sql('SELECT ip, login, at FROM pop_logins')
        self.assertEqual(len(rows), 1)
        ip, login, at = rows[0]
        self.assertEqual((ip, login), ('127.0.0.1', 'alice'))
        self.assertTrue(before - 1 <= at <= int(time.time()) + 1, at)
        c.cmd('QUIT')
        # Upsert: the row for this address is replaced, not duplicated.
        self.p.add_mailbox('bob', 'pw-bob')
        self.p.sql('UPDATE pop_logins SET at = 5')
        c = self.session('bob', 'pw-bob')
        rows = self.p.sql('SELECT ip, login, at FROM pop_logins')
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][:2], ('127.0.0.1', 'bob'))
        self.assertGreater(rows[0][2], 5)

    def test_failed_login_writes_nothing(self):
        c = self.connect()
        self.assertEqual(c.login('alice', 'nope'), FAILED)
        self.assertEqual(self.p.sql('SELECT count(*) FROM pop_logins')[0][0], 0)


@unittest.skipUnless(harness.have_ipv6_loopback(), 'no IPv6 loopback here')
class PopBeforeSmtpIpv6(Pop3TestCase):
    host = '::1'

    def test_pop_logins_row_ipv6(self):
        c = self.session()
        self.assertEqual(self.p.sql('SELECT ip, login FROM pop_logins'), [('::1', 'alice')])
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))


class Lock(Pop3TestCase):
    def setUp(self):
        super().setUp()
        self.put(new_message('locked'))

    def test_in_use_then_unlocked_after_quit(self):
        a = self.session()
        b = self.connect()
        r = b.login()
        self.assertTrue(r.startswith('-ERR [IN-USE]'), r)
        # The refused session stays in AUTHORIZATION and may quit.
        self.assertEqual(b.cmd('STAT'), '-ERR STAT is not valid in the AUTHORIZATION state')
        self.assertTrue(b.cmd('QUIT').startswith('+OK'))
        self.assertTrue(self.log_events(event='login', result='in_use'))
        self.assertTrue(a.cmd('QUIT').startswith('+OK'))
        self.assertTrue(a.closed())
        c = self.session()
        self.assertTrue(c.cmd('STAT').startswith('+OK 1 '))

    def test_unlocked_after_drop(self):
        a = self.session()
        self.assertTrue(a.cmd('DELE 1').startswith('+OK'))
        a.close()
        self.assertTrue(self.srv.wait_handlers())
        c = self.session()
        self.assertTrue(c.cmd('STAT').startswith('+OK 1 '))

    def test_unlocked_after_sigkill(self):
        a = self.session()
        self.assertTrue(a.cmd('DELE 1').startswith('+OK'))
        pids = self.srv.handler_pids()
        self.assertEqual(len(pids), 1, pids)
        os.kill(pids[0], signal.SIGKILL)
        self.assertTrue(a.closed())
        self.assertTrue(self.srv.wait_handlers())
        c = self.session()
        self.assertTrue(c.cmd('STAT').startswith('+OK 1 '), 'a killed session deleted nothing')
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        # The lock file is a dot file in the Maildir, invisible to readers.
        md = self.p.maildir('alice')
        self.assertIn('.postage-pop3.lock', os.listdir(md))
        self.assertEqual(len(self.p.messages('alice')), 1)

    def test_other_mailbox_not_locked(self):
        self.p.add_mailbox('bob', 'pw-bob')
        a = self.session()
        b = self.session('bob', 'pw-bob')
        self.assertTrue(a.cmd('NOOP').startswith('+OK'))
        self.assertTrue(b.cmd('NOOP').startswith('+OK'))


if __name__ == '__main__':
    main()
