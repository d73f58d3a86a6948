"""The delivery journal (shared/journal.h): a message for several
destinations reaches all of them or none, whatever moment the SMTP handler
dies at.

Each case runs the handler on pipes under strace, kills it (or fails a
call) at a chosen step of the delivery, checks what is left, then runs the
queue runner once and checks that it finished the delivery (the commit had
happened) or took it back (it had not). Loopback only: the relayhost is a
closed loopback port, so remote copies stay queued.
"""
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import FORWARD, LOCAL, REMOTE, Postage, harness  # noqa: E402

PASSWORD = 'journal-test-password'


class JournalTest(unittest.TestCase):
    def setUp(self):
        if not os.access(common.STRACE, os.X_OK):
            self.skipTest('strace is not installed')
        self.p = Postage().__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        p = self.p
        # Nothing listens at the relayhost: the runner defers remote mail.
        common.add_fault_world(p, PASSWORD, f'[127.0.0.1]:{harness._free_port("127.0.0.1")}')
        self.trace = os.path.join(p.dir, 'trace.txt')
        self.tag_n = 0

    def tearDown(self):
        self.assertEqual(common.sanitizer_reports(self.p), [])

    # -- running ----------------------------------------------------------

    def send(self, recipients, *injects, trace=None):
        """One session under strace with the injections (each like
        'link:signal=KILL:when=2'); (tag, body_lf, stdout)."""
        self.tag_n += 1
        tag = f'journal{os.getpid()}x{self.tag_n}'
        body = common.make_body(tag, long_line=False)
        calls = trace or [i.split(':', 1)[0] for i in injects]
        argv = common.strace_cmd(self.trace, calls)
        for i in injects:
            argv[-1:-1] = ['-e', 'inject=' + i]
        argv += [harness.binary(common.SMTP), '--db', self.p.db]
        r = subprocess.run(argv, input=common.smtp_dialog(recipients, body),
                           capture_output=True, timeout=120, env=self.p.env())
        if injects:
            self.assertIsNotNone(common.injected_call(self.trace),
                                 f'the fault was never injected: {r.stdout[-300:]!r}')
        return tag, common.lf_form(body), r.stdout

    def runner(self):
        r = subprocess.run([harness.binary(common.QUEUE), '--db', self.p.db, '--once'],
                           capture_output=True, timeout=120, env=self.p.env())
        self.assertEqual(r.returncode, 0, r.stderr[-500:])

    # -- looking ----------------------------------------------------------

    def copies(self, tag, body_lf):
        """{recipient: whole copies}; a partial copy fails the test."""
        out = {}
        for addr, login in LOCAL:
            paths = common.copies_of(self.p.maildir(login), tag)
            for path in paths:
                self.assertTrue(common.delivered_copy_ok(path, body_lf, addr),
                                f'{path} is not a whole copy')
            out[addr] = len(paths)
        return out

    def queued(self):
        with sqlite3.connect(self.p.db) as c:
            return c.execute("SELECT message_id, state, attempts FROM queue_recipients "
                             "WHERE recipient = ?", (REMOTE,)).fetchall()

    def journals(self):
        d = os.path.join(self.p.spool_dir, 'links')
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def tmp_files(self):
        return sum(len(common.maildir_files(self.p.maildir(login))['tmp'])
                   for _, login in LOCAL)

    # -- cases ------------------------------------------------------------

    def test_kill_between_two_maildirs_is_finished(self):
        # Links: alice's copy (1), bob's (2). Killed at the second.
        tag, body, out = self.send([a for a, _ in LOCAL], 'link:signal=KILL:when=2')
        self.assertNotIn(b'\r\n250 2.0.0', out)
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 0})
        self.assertEqual(len(self.journals()), 1, self.journals())
        self.runner()
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 1})
        self.assertEqual(self.journals(), [])
        self.assertEqual(self.tmp_files(), 0)
        # Once more: nothing changes.
        self.runner()
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 1})

    def test_kill_after_queue_commit_is_finished(self):
        # Links: the queue file (1), alice (2), bob (3). Killed at bob's:
        # the queue rows are committed, so the copies are owed.
        rcpts = [a for a, _ in LOCAL] + [FORWARD]
        tag, body, out = self.send(rcpts, 'link:signal=KILL:when=3')
        self.assertNotIn(b'\r\n250 2.0.0', out)
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 0})
        self.assertEqual(len(self.queued()), 1)
        self.runner()
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 1})
        self.assertEqual(self.journals(), [])
        q = self.queued()
        self.assertEqual(len(q), 1)
        self.assertEqual(q[0][1], 'queued')

    def test_kill_before_queue_commit_is_taken_back(self):
        # Killed at the queue file's link: the journal is written, nothing
        # is committed. The runner takes the staged copies back.
        rcpts = [a for a, _ in LOCAL] + [FORWARD]
        tag, body, out = self.send(rcpts, 'link:signal=KILL:when=1')
        self.assertNotIn(b'\r\n250 2.0.0', out)
        self.assertEqual(len(self.journals()), 1)
        self.assertEqual(self.tmp_files(), 2)
        self.runner()
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 0, LOCAL[1][0]: 0})
        self.assertEqual(self.queued(), [])
        self.assertEqual(self.journals(), [])
        self.assertEqual(self.tmp_files(), 0)

    def test_failed_link_takes_every_copy_back(self):
        # bob's link fails: the client is told 451 and nobody has it.
        tag, body, out = self.send([a for a, _ in LOCAL], 'link:error=EIO:when=2')
        self.assertIn(b'\r\n451 4.3.0', out)
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 0, LOCAL[1][0]: 0})
        self.assertEqual(self.journals(), [])
        self.assertEqual(self.tmp_files(), 0)

    def test_kill_while_taking_back_is_finished(self):
        # bob's link fails, then the handler dies right after marking the
        # journal aborted (fsyncs: alice's and bob's files, the journal,
        # its directory, then the directory after the abort): alice's copy
        # is in new/ and must go.
        # A clean delivery first, so that no Maildir or spool directory
        # is made (and fsynced) in the run that counts.
        _, _, out = self.send([a for a, _ in LOCAL], trace=['fsync'])
        self.assertIn(b'\r\n250 2.0.0', out)
        tag, body_lf, _ = self.send([a for a, _ in LOCAL], 'link:error=EIO:when=2',
                                    'fsync:signal=KILL:when=5')
        self.assertEqual([j for j in self.journals() if j.endswith('.abort')],
                         self.journals())
        self.assertEqual(len(self.journals()), 1)
        self.assertEqual(self.copies(tag, body_lf), {LOCAL[0][0]: 1, LOCAL[1][0]: 0})
        self.runner()
        self.assertEqual(self.copies(tag, body_lf), {LOCAL[0][0]: 0, LOCAL[1][0]: 0})
        self.assertEqual(self.journals(), [])

    def test_held_journal_waits(self):
        # A journal whose handler still holds it: the runner neither
        # finishes it nor sends its queued copy.
        rcpts = [a for a, _ in LOCAL] + [FORWARD]
        tag, body, _ = self.send(rcpts, 'link:signal=KILL:when=3')
        [name] = self.journals()
        fd = os.open(os.path.join(self.p.spool_dir, 'links', name), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.runner()
            self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 0})
            self.assertEqual(self.journals(), [name])
            self.assertEqual(self.queued()[0][2], 0, 'the held message was tried')
        finally:
            os.close(fd)
        self.runner()
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 1})
        self.assertEqual(self.queued()[0][2], 1, 'the finished message was not tried')

    def test_runner_passes_again_once_the_handler_lets_go(self):
        # Without --once the runner comes back for what it held: released
        # after 0.3 s, the journal is finished and the copy tried in the
        # same run, not at the next timer.
        rcpts = [a for a, _ in LOCAL] + [FORWARD]
        tag, body, _ = self.send(rcpts, 'link:signal=KILL:when=3')
        [name] = self.journals()
        fd = os.open(os.path.join(self.p.spool_dir, 'links', name), os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        release = threading.Timer(0.3, os.close, (fd,))
        release.start()
        try:
            r = subprocess.run([harness.binary(common.QUEUE), '--db', self.p.db],
                               capture_output=True, timeout=120, env=self.p.env())
        finally:
            release.join()
        self.assertEqual(r.returncode, 0, r.stderr[-500:])
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 1})
        self.assertEqual(self.journals(), [])
        self.assertEqual(self.queued()[0][2], 1, 'the released message was not tried')

    # -- a mailing list's post: its copies, all or none ---------------------

    LIST = 'team@example.test'

    def make_list(self):
        self.p.sql("INSERT INTO lists (address, owner, posting) VALUES (?, ?, 'anyone')",
                   self.LIST, LOCAL[0][0])
        for addr in [a for a, _ in LOCAL] + [REMOTE]:
            self.p.sql('INSERT INTO list_members (list, address) VALUES (?, ?)', self.LIST, addr)

    def list_copies(self, tag):
        """{login: copies of the post}; each must be whole (the list's
        copy: its fields, then the message to its last byte)."""
        out = {}
        for _, login in LOCAL:
            paths = common.copies_of(self.p.maildir(login), tag)
            for path in paths:
                with open(path, 'rb') as f:
                    data = f.read()
                self.assertTrue(data.startswith(b'Return-Path: <team-bounces@example.test>\n'), path)
                self.assertIn(b'List-Id: <team.example.test>\n', data)
                self.assertTrue(data.endswith(f'line 7 of the body of run {tag}\n-- the end\n'.encode()),
                                f'{path} is not a whole copy')
            out[login] = len(paths)
        return out

    def list_queued(self):
        with sqlite3.connect(self.p.db) as c:
            return c.execute('SELECT r.recipient FROM queue_recipients r JOIN queue_messages m '
                             'ON m.id = r.message_id WHERE m.verp = 1').fetchall()

    def test_list_post_killed_after_its_commit_is_finished(self):
        # Links of a list post: bob's copy of alice's file into his tmp/
        # (1), the copy into the queue (2), then alice's (3) and bob's (4)
        # into new/. Killed at bob's: the queue transaction committed, so
        # every member's copy is owed.
        self.make_list()
        tag, _, out = self.send([self.LIST], 'link:signal=KILL:when=4')
        self.assertNotIn(b'\r\n250 2.0.0', out)
        self.assertEqual(self.list_copies(tag), {'alice': 1, 'bob': 0})
        self.assertEqual(self.list_queued(), [(REMOTE,)])
        self.assertEqual(len(self.journals()), 1)
        self.runner()
        self.assertEqual(self.list_copies(tag), {'alice': 1, 'bob': 1})
        self.assertEqual(self.journals(), [])
        self.assertEqual(self.tmp_files(), 0)

    def test_list_post_killed_before_its_commit_is_taken_back(self):
        # Killed at the queue link (2): nothing committed, no member has it.
        self.make_list()
        tag, _, out = self.send([self.LIST], 'link:signal=KILL:when=2')
        self.assertNotIn(b'\r\n250 2.0.0', out)
        self.assertEqual(self.list_copies(tag), {'alice': 0, 'bob': 0})
        self.runner()
        self.assertEqual(self.list_copies(tag), {'alice': 0, 'bob': 0})
        self.assertEqual(self.list_queued(), [])
        self.assertEqual(self.journals(), [])
        self.assertEqual(self.tmp_files(), 0)

    def test_one_mailbox_needs_no_journal(self):
        # One copy is one link: no journal, and so no extra fsyncs.
        tag, body, out = self.send([LOCAL[0][0]], trace=['openat', 'rename'])
        self.assertIn(b'\r\n250 2.0.0', out)
        self.assertEqual(self.copies(tag, body), {LOCAL[0][0]: 1, LOCAL[1][0]: 0})
        with open(self.trace) as f:
            trace = f.read()
        self.assertIn('/tmp/', trace)  # the trace saw the delivery
        self.assertNotIn('/links/', trace)


if __name__ == '__main__':
    unittest.main()
