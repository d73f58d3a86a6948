"""pop3_uidl_format (issue 18) against hand-written dovecot-uidlist files:
Dovecot's UIDLs for the messages it lists (its saved P field first), the
next UID and a record for those it does not list yet, the lock, the
setting unset (postage's own UIDLs, no file opened), and broken or
hostile files (postage's own UIDLs, a log line, no crash). The same
against a real Dovecot is test_pop3_dovecot.py."""
import os
import shutil
import subprocess
import time

from harness import binary, main
from pop3_base import PASSWORD, POP3, Pop3TestCase, new_message

DEFAULT = '%08Xu%08Xv'   # Dovecot 2.3's pop3_uidl_format
UV = 1796653515          # a UIDVALIDITY as Dovecot writes it (a time)
GUID = '56419618cbc1166b7712000083ecc375'


def dovecot_uidl(uid, uv=UV):
    """What Dovecot's %08Xu%08Xv gives: X is lower-case hex."""
    return f'{uid:08x}{uv:08x}'


class UidlistTestCase(Pop3TestCase):
    def setUp(self):
        super().setUp()
        self.md = self.p.maildir('alice')
        for sub in ('cur', 'new', 'tmp'):
            os.makedirs(os.path.join(self.md, sub), exist_ok=True)
        self.uidlist = os.path.join(self.md, 'dovecot-uidlist')
        self.lock = self.uidlist + '.lock'

    def write_uidlist(self, text, mode='w'):
        with open(self.uidlist, mode) as f:
            f.write(text)

    def read_uidlist(self):
        with open(self.uidlist) as f:
            return f.read()

    def put_named(self, base, where='cur', flags='S', body=None):
        """A message whose base name (Dovecot's: up to ':') is base."""
        data = new_message(base) if body is None else body
        return self.put(data, base=base, sizes=False, where=where, flags=flags)

    def uidls(self):
        """{UIDL: Subject's first word} of one session, which ends with
        QUIT (nothing deleted)."""
        m = self.poplib()
        _, lines, _ = m.uidl()
        out = {}
        for line in lines:
            n, uidl = line.decode().split(' ', 1)
            head = m.top(int(n), 0)[1]
            subject = [h for h in head if h.startswith(b'Subject: ')][0]
            out[uidl] = subject.split()[1].decode()
        m.quit()
        return out


class Listed(UidlistTestCase):
    def setUp(self):
        super().setUp()
        # As Dovecot leaves a Maildir: records without the flags, one
        # with W, one moved to cur/ with flags since, one still in new/.
        self.bases = ['1700000001.M1P1.host,S=39', '1700000002.M2P1.host',
                      '1700000003.M3P1.host,S=12,W=13']
        self.put_named(self.bases[0], where='cur', flags='S')
        self.put_named(self.bases[1], where='cur', flags='RS')
        self.put_named(self.bases[2], where='new')
        self.write_uidlist(f'3 V{UV} N8 G{GUID}\n'
                           f'1 :1700000000.M0P1.host\n'            # expunged since
                           f'3 W43 :{self.bases[0]}\n'
                           f'5 G0123abcdef :{self.bases[1]}:2,S\n'  # an old name with flags
                           f'7 :{self.bases[2]}\n')
        self.before = self.read_uidlist()

    def test_default_format(self):
        self.p.set('pop3_uidl_format', DEFAULT)
        got = self.uidls()
        self.assertEqual(got, {dovecot_uidl(3): self.bases[0], dovecot_uidl(5): self.bases[1],
                               dovecot_uidl(7): self.bases[2]})
        # All were listed: the file is as it was, and no lock is left.
        self.assertEqual(self.read_uidlist(), self.before)
        self.assertFalse(os.path.exists(self.lock))
        self.assertTrue(self.log_events(event='uidlist', result='ok', numbered=0, hidden=0))
        # The same in the next session (the file in new/ is in cur/ now).
        self.assertEqual(self.uidls(), got)

    def test_other_formats(self):
        for fmt, want in [
            ('%v.%u', {f'{UV}.3': 0, f'{UV}.5': 1, f'{UV}.7': 2}),
            ('%f', {b: i for i, b in enumerate(self.bases)}),
            # %g: the record's G, else the base name, as in Dovecot
            ('%g', {self.bases[0]: 0, '0123abcdef': 1, self.bases[2]: 2}),
            ('%u-%08XUv', {f'3-{UV:08X}': 0, f'5-{UV:08X}': 1, f'7-{UV:08X}': 2}),
        ]:
            with self.subTest(format=fmt):
                self.p.set('pop3_uidl_format', fmt)
                self.assertEqual(self.uidls(), {k: self.bases[i] for k, i in want.items()})

    def test_saved_pop3_uidl_wins(self):
        # Dovecot's pop3_save_uidl: P<uidl> is the message's UIDL, an
        # empty P the base name, whatever the format says.
        self.write_uidlist(f'3 V{UV} N8 G{GUID}\n'
                           f'3 W43 Pold-uidl-1 :{self.bases[0]}\n'
                           f'5 P :{self.bases[1]}\n'
                           f'7 :{self.bases[2]}\n')
        self.p.set('pop3_uidl_format', DEFAULT)
        self.assertEqual(self.uidls(), {'old-uidl-1': self.bases[0], self.bases[1]: self.bases[1],
                                        dovecot_uidl(7): self.bases[2]})

    def test_unsendable_saved_uidl_keeps_own(self):
        # A saved UIDL longer than a reply line allows: that message keeps
        # postage's own UIDL (its base name up to ','), the others not.
        self.write_uidlist(f'3 V{UV} N8\n'
                           f'3 P{"x" * 300} :{self.bases[0]}\n'
                           f'5 :{self.bases[1]}\n'
                           f'7 :{self.bases[2]}\n')
        self.p.set('pop3_uidl_format', DEFAULT)
        got = self.uidls()
        self.assertEqual(got, {self.bases[0].split(',')[0]: self.bases[0],
                               dovecot_uidl(5): self.bases[1], dovecot_uidl(7): self.bases[2]})
        self.assertTrue(self.log_events(event='uidlist', result='ok', own_uidls=1, unusable=1))

    def test_unset_is_postages_own_and_opens_nothing(self):
        # The default: the Maildir base names, as before issue 18; the
        # file is not even opened (strace shows what is).
        got = self.uidls()
        self.assertEqual(got, {b.split(',')[0]: b for b in self.bases})
        self.assertEqual(self.read_uidlist(), self.before)
        self.assertFalse(self.log_events(event='uidlist'))
        if not shutil.which('strace'):
            self.skipTest('strace is not installed (package strace)')
        for fmt, opened in (('', False), (DEFAULT, True)):
            with self.subTest(format=fmt):
                self.p.set('pop3_uidl_format', fmt)
                trace = os.path.join(self.p.dir, 'strace.out')
                subprocess.run(['strace', '-f', '-qq', '-e', 'trace=%file', '-o', trace,
                                binary(POP3), '--db', self.p.db],
                               input=f'USER alice\r\nPASS {PASSWORD}\r\nUIDL\r\nQUIT\r\n'.encode(),
                               capture_output=True, env=self.p.env(), timeout=60, check=True)
                with open(trace) as f:
                    text = f.read()
                self.assertEqual('dovecot-uidlist' in text, opened, text[-3000:])


class Unlisted(UidlistTestCase):
    def setUp(self):
        super().setUp()
        self.p.set('pop3_uidl_format', DEFAULT)
        self.put_named('1700000001.M1P1.host')
        self.write_uidlist(f'3 V{UV} N2 G{GUID}\n1 :1700000001.M1P1.host\n')

    def test_numbered_recorded_and_stable(self):
        # Two delivered since Dovecot last looked: the next UIDs, in
        # delivery order, and a record each, so that Dovecot gives them
        # the same UIDLs.
        self.put_named('1700000003.M3P1.host,S=10,W=11', where='new')
        self.put_named('1700000002.M2P1.host', where='new')
        first = self.uidls()
        self.assertEqual(first, {dovecot_uidl(1): '1700000001.M1P1.host',
                                 dovecot_uidl(2): '1700000002.M2P1.host',
                                 dovecot_uidl(3): '1700000003.M3P1.host,S=10,W=11'})
        self.assertEqual(self.read_uidlist(),
                         f'3 V{UV} N2 G{GUID}\n1 :1700000001.M1P1.host\n'
                         '2 :1700000002.M2P1.host\n3 :1700000003.M3P1.host,S=10,W=11\n')
        self.assertFalse(os.path.exists(self.lock))
        self.assertFalse(os.path.exists(self.uidlist + '.tmp'))
        self.assertTrue(self.log_events(event='uidlist', result='ok', numbered=2))
        # Stable: the next session reads them from the file.
        self.assertEqual(self.uidls(), first)
        self.assertTrue(self.log_events(event='uidlist', result='ok', numbered=0))
        # One more, after records Dovecot appended (its header's N stays
        # behind): past the last record.
        self.write_uidlist('9 :1700000000.gone\n', mode='a')
        self.put_named('1700000004.M4P1.host', where='new')
        got = self.uidls()
        self.assertEqual(got[dovecot_uidl(10)], '1700000004.M4P1.host')
        self.assertEqual(len(got), 4)

    def test_no_uidlist_makes_one(self):
        # Never served by Dovecot: a file as Dovecot would make it, so
        # that a Dovecot started later shows the same UIDLs.
        os.unlink(self.uidlist)
        self.put_named('1700000002.M2P1.host', where='new')
        first = self.uidls()
        text = self.read_uidlist()
        head, *records = text.splitlines()
        fields = dict((f[0], f[1:]) for f in head.split()[1:])
        self.assertEqual(head.split()[0], '3')
        uv = int(fields['V'])
        self.assertLess(abs(uv - time.time()), 600)
        self.assertRegex(fields['G'], r'^[0-9a-f]{32}$')
        self.assertEqual(fields['N'], '3')
        self.assertEqual(records, ['1 :1700000001.M1P1.host', '2 :1700000002.M2P1.host'])
        self.assertEqual(first, {dovecot_uidl(1, uv): '1700000001.M1P1.host',
                                 dovecot_uidl(2, uv): '1700000002.M2P1.host'})
        self.assertEqual(self.uidls(), first)

    def test_empty_maildir_makes_nothing(self):
        os.unlink(self.uidlist)
        for sub in ('cur', 'new'):
            d = os.path.join(self.md, sub)
            for n in os.listdir(d):
                os.unlink(os.path.join(d, n))
        self.assertEqual(self.uidls(), {})
        self.assertFalse(os.path.exists(self.uidlist))

    def test_version_1_file(self):
        # Dovecot 1.0's (and Courier's) format: records written in it,
        # its next UID raised.
        self.write_uidlist('1 1700000000 5\n1 1700000001.M1P1.host:2,S\n')
        self.put_named('1700000002.M2P1.host', where='new')
        self.assertEqual(self.uidls(), {dovecot_uidl(1, 1700000000): '1700000001.M1P1.host',
                                        dovecot_uidl(5, 1700000000): '1700000002.M2P1.host'})
        self.assertEqual(self.read_uidlist(),
                         '1 1700000000 6\n1 1700000001.M1P1.host:2,S\n5 1700000002.M2P1.host\n')

    def test_lock_held_waits_then_leaves_them_for_later(self):
        # Dovecot (this live process) holds the lock past the wait: the
        # new message is left out of this session rather than given a
        # UIDL that would change, and listed once the lock is free.
        self.put_named('1700000002.M2P1.host', where='new')
        with open(self.lock, 'w') as f:
            f.write(f'{os.getpid()}:{os.uname().nodename}')
        start = time.monotonic()
        got = self.uidls()
        self.assertGreaterEqual(time.monotonic() - start, 4.5)   # UIDLIST_LOCK_WAIT_MS
        self.assertEqual(got, {dovecot_uidl(1): '1700000001.M1P1.host'})
        self.assertTrue(self.log_events(event='uidlist', result='lock_busy'))
        self.assertTrue(self.log_events(event='uidlist', result='ok', hidden=1))
        self.assertTrue(os.path.exists(self.lock))                # not ours to remove
        self.assertEqual(self.read_uidlist().count('\n'), 2)
        os.unlink(self.lock)
        self.assertEqual(self.uidls(), {dovecot_uidl(1): '1700000001.M1P1.host',
                                        dovecot_uidl(2): '1700000002.M2P1.host'})

    def test_stale_lock_of_dead_process_replaced(self):
        self.put_named('1700000002.M2P1.host', where='new')
        dead = subprocess.Popen(['true'])
        dead.wait()
        with open(self.lock, 'w') as f:
            f.write(f'{dead.pid}:{os.uname().nodename}')
        old = time.time() - 5
        os.utime(self.lock, (old, old))
        start = time.monotonic()
        got = self.uidls()
        self.assertLess(time.monotonic() - start, 4)
        self.assertEqual(got[dovecot_uidl(2)], '1700000002.M2P1.host')
        self.assertFalse(os.path.exists(self.lock))
        self.assertTrue(self.log_events(event='uidlist_lock', result='stale_removed'))

    def test_dele_quit(self):
        # DELE and QUIT work on Dovecot's UIDLs as on ours; the record
        # stays for Dovecot to drop.
        self.put_named('1700000002.M2P1.host', where='new')
        m = self.poplib()
        self.assertEqual(m.uidl(2), f'+OK 2 {dovecot_uidl(2)}'.encode())
        m.dele(1)
        m.quit()
        self.assertEqual(self.uidls(), {dovecot_uidl(2): '1700000002.M2P1.host'})


class Refused(UidlistTestCase):
    """What falls back to postage's own UIDLs, logged, never a crash."""

    def setUp(self):
        super().setUp()
        self.put_named('1700000001.M1P1.host,S=5')
        self.put_named('1700000002.M2P1.host', where='new')
        self.own = {'1700000001.M1P1.host': '1700000001.M1P1.host,S=5',
                    '1700000002.M2P1.host': '1700000002.M2P1.host'}

    def test_formats_refused(self):
        self.write_uidlist(f'3 V{UV} N3\n1 :1700000001.M1P1.host,S=5\n')
        before = self.read_uidlist()
        for fmt in ('%m', '%Mf', '%08xu', 'no-variable', '%{uid}', '%u' + 'a' * 300):
            with self.subTest(format=fmt):
                self.p.set('pop3_uidl_format', fmt)
                self.assertEqual(self.uidls(), self.own)
                self.assertTrue(self.log_events(event='setting', result='refused',
                                                key='pop3_uidl_format'))
                self.assertEqual(self.read_uidlist(), before)

    def test_broken_and_hostile_files(self):
        self.p.set('pop3_uidl_format', DEFAULT)
        cases = {
            'empty': b'',
            'garbage': b'\x00\xff garbage\n\x01\x02\n',
            'bad version': b'2 V1 N1\n1 :1700000001.M1P1.host,S=5\n',
            'no uidvalidity': b'3 N5\n1 :1700000001.M1P1.host,S=5\n',
            'uids going down': f'3 V{UV} N9\n5 :a\n4 :1700000001.M1P1.host,S=5\n'.encode(),
            'uid 0': f'3 V{UV} N9\n0 :1700000001.M1P1.host,S=5\n'.encode(),
            'uid too big': f'3 V{UV} N9\n4294967295 :1700000001.M1P1.host,S=5\n'.encode(),
            'slash': f'3 V{UV} N9\n1 :../../etc/passwd\n'.encode(),
            'nul': f'3 V{UV} N9\n1 :1700000001.M1P1.host,S=5\x00x\n'.encode(),
            'long line': f'3 V{UV} N9\n1 :'.encode() + b'a' * 100000 + b'\n',
            'no header line': b'3 V1796653515 N1',
        }
        for name, data in cases.items():
            with self.subTest(file=name):
                with open(self.uidlist, 'wb') as f:
                    f.write(data)
                broken = len(self.log_events(event='uidlist', result='broken'))
                fallback = len(self.log_events(event='uidlist', result='fallback'))
                self.assertEqual(self.uidls(), self.own)
                self.assertEqual(len(self.log_events(event='uidlist', result='broken')),
                                 broken + 1, name)
                self.assertEqual(len(self.log_events(event='uidlist', result='fallback')),
                                 fallback + 1, name)
                # Never repaired or replaced by us: Dovecot's to judge.
                with open(self.uidlist, 'rb') as f:
                    self.assertEqual(f.read(), data)
                self.assertFalse(os.path.exists(self.lock))

    def test_not_a_file(self):
        self.p.set('pop3_uidl_format', DEFAULT)
        # a symlink (never followed) and a folder
        os.symlink('/etc/passwd', self.uidlist)
        self.assertEqual(self.uidls(), self.own)
        self.assertTrue(self.log_events(event='uidlist', result='unreadable'))
        os.unlink(self.uidlist)
        os.mkdir(self.uidlist)
        self.assertEqual(self.uidls(), self.own)
        self.assertTrue(os.path.isdir(self.uidlist))


if __name__ == '__main__':
    main()
