"""smtp-handler --mode=mx when things go wrong: a database of the wrong
version, a database locked by an administrator, a handler killed mid-way."""
import os
import signal
import subprocess
import time
import unittest

import harness
from smtp_base import SmtpTestCase, new_message, wire


class SchemaVersion(SmtpTestCase):
    def check_refused(self, version):
        self.p.sql(f'PRAGMA user_version = {version}')
        c = self.connect(greet=False)
        code, text = c.reply()
        self.assertEqual(code, 421, text)
        self.assertTrue(text[0].startswith('4.3.0'), text)
        self.assertTrue(c.closed())
        log = self.p.log_text()
        self.assertIn(f'user_version={version}', log)
        return log

    def test_newer_database(self):
        log = self.check_refused(99)
        self.assertRegex(log, r'action="[^"]*install[^"]*"')

    def test_older_database(self):
        log = self.check_refused(0)
        # the log line says what the administrator must run
        self.assertRegex(log, r'action="[^"]*schema/migrations[^"]*"')
        self.assertIn('sqlite3 ', log)

    def test_missing_database(self):
        os.unlink(self.p.db)
        c = self.connect(greet=False)
        code, text = c.reply()
        self.assertEqual(code // 100, 4, text)
        self.assertTrue(c.closed())
        # and no empty database was made in its place
        self.assertFalse(os.path.exists(self.p.db))


class AdminLock(SmtpTestCase):
    """An administrator's open sqlite3 transaction: a few seconds of busy
    timeout, then a 4xx, never a 5xx and never a crash."""

    def admin_lock(self, exclusive_mode):
        """Starts sqlite3 holding a write lock (and with exclusive locking
        mode, a lock that blocks readers too); returns the process."""
        script = ''
        if exclusive_mode:
            script += 'PRAGMA locking_mode = EXCLUSIVE;\n'
        script += ("BEGIN EXCLUSIVE;\n"
                   "INSERT INTO settings(key, value) VALUES('admin_was_here', '1');\n"
                   "SELECT 'locked';\n")
        proc = subprocess.Popen(['sqlite3', '-batch', self.p.db], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(self.release, proc)
        proc.stdin.write(script.encode())
        proc.stdin.flush()
        out = []
        while not out or out[-1] not in (b'locked', b''):
            out.append(proc.stdout.readline().strip())  # "exclusive" first, from the PRAGMA
        self.assertEqual(out[-1], b'locked', out)
        return proc

    def release(self, proc):
        if proc.poll() is None:
            try:
                proc.stdin.write(b'ROLLBACK;\n.quit\n')
                proc.stdin.close()
            except BrokenPipeError:
                pass
            harness.stop_process(proc, timeout=10)
        proc.stdout.close()

    def test_lock_blocking_readers_at_connect(self):
        proc = self.admin_lock(exclusive_mode=True)
        c = self.connect(greet=False)
        c.sock.settimeout(60)
        t0 = time.monotonic()
        code, text = c.reply()
        waited = time.monotonic() - t0
        self.assertEqual(code // 100, 4, text)
        self.assertGreaterEqual(waited, 3.0, 'no busy timeout: gave up at once')
        self.release(proc)
        # once the administrator is done, mail flows again
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)

    def test_lock_taken_mid_session(self):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<bob@example.test>')[0], 250)
        proc = self.admin_lock(exclusive_mode=True)
        c.sock.settimeout(60)
        # The handler's open WAL connection keeps reading (SQLite cannot
        # take the file away from it), or it waits and gets a 4xx: both
        # are fine, a 5xx is not.
        code, text = c.cmd('RCPT TO:<alice@example.test>')
        self.assertIn(code, (250, 451), text)
        # the session is still there, and with the lock gone works
        self.release(proc)
        if code != 250:
            code, text = c.cmd('RCPT TO:<alice@example.test>')
            self.assertEqual(code, 250, text)
        self.send_data(c, new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(len(self.p.messages('bob')), 1)

    def test_write_lock_in_wal_mode(self):
        # A plain BEGIN EXCLUSIVE in WAL mode leaves readers alone: local
        # delivery goes on; a message that must be queued (a database
        # write) waits, then gets a 4xx.
        self.p.add_relay_network('127.0.0.1/32')
        proc = self.admin_lock(exclusive_mode=False)
        c = self.session()
        c.sock.settimeout(60)
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<bob@example.test>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<u@elsewhere.test>')[0], 250)
        t0 = time.monotonic()
        code, text = self.send_data(c, new_message(), expect=None)
        self.assertEqual(code // 100, 4, text)
        self.assertGreaterEqual(time.monotonic() - t0, 3.0, 'no busy timeout: gave up at once')
        # all or nothing: bob's copy was not kept either
        self.assertEqual(self.p.messages('bob'), [])
        self.release(proc)
        self.assert_nothing_queued()
        self.assertEqual(c.cmd('NOOP')[0], 250)


class Durability(SmtpTestCase):
    def handler_pid(self):
        self.assertTrue(self.wait_for(lambda: len(self.srv.handler_pids()) == 1))
        return self.srv.handler_pids()[0]

    def test_sigkill_mid_data(self):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        for r in ('alice@example.test', 'list@example.test', 'whoever@catch.test'):
            self.assertEqual(c.cmd(f'RCPT TO:<{r}>')[0], 250)
        self.assertEqual(c.cmd('DATA')[0], 354)
        data = wire(new_message(body='k' * 50000 + '\n'))
        c.send(data[:30000])
        pid = self.handler_pid()
        # let it read what was sent
        staging = os.path.join(self.p.spool_dir)
        self.wait_for(lambda: any(os.path.getsize(os.path.join(d, f)) > 20000
                                  for d, _, fs in os.walk(staging) for f in fs), timeout=5)
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(self.srv.wait_handlers(timeout=10))
        self.assertTrue(c.closed())
        for login in ('alice', 'bob', 'carol'):
            md = self.p.maildir(login)
            for sub in ('new', 'cur', 'tmp'):
                d = os.path.join(md, sub)
                self.assertEqual(os.listdir(d) if os.path.isdir(d) else [], [], d)
        self.assert_nothing_queued()

    def test_sigkill_around_end_of_data(self):
        # Kill at various moments near the end: an accepted message (250
        # seen) is complete in every Maildir; whatever else is there is
        # complete too, never half-written.
        msg = new_message(body='e' * 20000 + '\n')
        for delay in (0.0, 0.002, 0.01, 0.05):
            c = self.session()
            self.start_data(c, rcpts=['list@example.test'])
            pid = self.handler_pid()
            c.send(wire(msg))
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            try:
                code, _ = c.reply()
            except (EOFError, ConnectionResetError):
                code = None
            self.assertTrue(self.srv.wait_handlers(timeout=10))
            c.close()
            for login in ('alice', 'bob'):
                paths = self.p.messages(login)
                if code == 250:
                    self.assertEqual(len(paths), 1, (delay, login))
                for path in paths:
                    _, rest = self.split_prefix(self.read(path))
                    self.assertEqual(rest, msg, (delay, path))
                    os.unlink(path)


if __name__ == '__main__':
    unittest.main()
