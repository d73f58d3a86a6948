"""POP3 and IMAP on one Maildir (issue 22): Debian's Dovecot serves a
mailbox over IMAP while postage's pop3-handler serves it over POP3, as on
a server that offers both (README, "IMAP and webmail"). IMAP flags,
moves into a folder and expunges; POP3 lists, retrieves and deletes,
before, between and during each other's sessions; both must always agree
on what the inbox holds, POP3 must never show a folder's mail, and
neither may lose or duplicate a message.

Dovecot and postage run as the user nobody, who owns the test's files
(test_pop3_dovecot.py has the reasons). Needs root; skips (exit 77)
without Dovecot's IMAP server (package dovecot-imapd), which
scripts/test installs.
"""
import imaplib
import os
import re

from harness import main
from pop3_base import PASSWORD
from test_pop3_dovecot import DovecotTestCase

IMAP_SERVER = '/usr/lib/dovecot/imap'
MID = re.compile(rb'^Message-ID:\s*(<[^>]+>)', re.I | re.M)


class PopAndImap(DovecotTestCase):
    def setUp(self):
        if not os.access(IMAP_SERVER, os.X_OK):
            self.skipTest(f'Dovecot IMAP is not installed ({IMAP_SERVER}: package dovecot-imapd)')
        super().setUp()
        self.dovecot.start(protocol='imap')

    # -- IMAP -------------------------------------------------------------

    def imap(self):
        m = imaplib.IMAP4('127.0.0.1', self.dovecot.port, timeout=30)
        self.addCleanup(self._imap_close, m)
        typ, _ = m.login('alice', PASSWORD)
        self.assertEqual(typ, 'OK')
        return m

    @staticmethod
    def _imap_close(m):
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass

    def imap_ids(self, m, mailbox='INBOX'):
        """{Message-ID: UID} of mailbox, selected afresh."""
        typ, data = m.select(mailbox)
        self.assertEqual(typ, 'OK', data)
        if int(data[0]) == 0:
            return {}
        typ, data = m.uid('FETCH', '1:*', '(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
        self.assertEqual(typ, 'OK', data)
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            uid = int(re.search(rb'UID (\d+)', item[0]).group(1))
            mid = MID.search(item[1]).group(1).decode()
            self.assertNotIn(mid, out, f'{mid} twice in {mailbox}')
            out[mid] = uid
        return out

    def imap_ok(self, result):
        typ, data = result
        self.assertEqual(typ, 'OK', data)
        return data

    # -- POP3 -------------------------------------------------------------

    def pop_numbers(self, m):
        """{Message-ID: message number} of an open poplib session."""
        out = {}
        for line in m.list()[1]:
            n = int(line.split()[0])
            head = b'\n'.join(m.top(n, 0)[1])
            out[MID.search(head).group(1).decode()] = n
        return out

    def retr_body(self, m, n):
        lines = m.retr(n)[1]
        return lines[lines.index(b'') + 1:]

    def assert_agree(self, expect, note):
        """IMAP's INBOX and a POP3 session both hold exactly expect
        (Message-IDs), and POP3 shows no other mailbox's mail."""
        got_imap = set(self.imap_ids(self.imap()))
        got_pop = set(self.listing(self.pop3))
        self.assertEqual(got_imap, set(expect), f'IMAP INBOX {note}')
        self.assertEqual(got_pop, set(expect), f'POP3 {note}')

    # -- the test -----------------------------------------------------------

    def test_both_at_once(self):
        ids = self.deliver(7)
        body = {mid: [f'body {i + 1}'.encode()] for i, mid in enumerate(ids)}

        # Delivered by postage: both see all seven, IMAP before POP3.
        imap = self.imap()
        uids = self.imap_ids(imap)
        self.assertEqual(set(uids), set(ids))
        uidls = self.listing(self.pop3)
        self.assertEqual(set(uidls), set(ids))

        # POP3 retrieves and deletes the first; IMAP, still connected,
        # sees it go and keeps every other UID.
        m = self.poplib(srv=self.pop3)
        n = self.pop_numbers(m)
        self.assertEqual(self.retr_body(m, n[ids[0]]), body[ids[0]])
        m.dele(n[ids[0]])
        m.quit()
        imap.noop()
        after = self.imap_ids(imap)
        self.assertEqual(after, {k: v for k, v in uids.items() if k != ids[0]})

        # IMAP flags one, moves one into a folder, expunges one. POP3 sees
        # the flagged one under the same UIDL, and the other two no more.
        self.imap_ok(imap.create('Archive'))
        self.imap_ids(imap)
        self.imap_ok(imap.uid('STORE', str(uids[ids[1]]), '+FLAGS', r'(\Flagged \Seen)'))
        self.imap_ok(imap.uid('MOVE', str(uids[ids[2]]), 'Archive'))
        self.imap_ok(imap.uid('STORE', str(uids[ids[3]]), '+FLAGS', r'(\Deleted)'))
        self.imap_ok(imap.expunge())
        flagged = [f for f in os.listdir(os.path.join(self.p.maildir('alice'), 'cur'))
                   if f.endswith(':2,FS')]
        self.assertEqual(len(flagged), 1, 'Dovecot keeps flags in the file name')
        rest = [ids[1], ids[4], ids[5], ids[6]]
        self.assert_agree(rest, 'after IMAP flagged, moved and expunged')
        now = self.listing(self.pop3)
        self.assertEqual(now, {k: uidls[k] for k in rest}, 'UIDLs stay through IMAP flags')
        self.assertEqual(set(self.imap_ids(imap, 'Archive')), {ids[2]})

        # During one POP3 session: IMAP renames one file (a flag) and
        # expunges another. POP3 still retrieves the renamed one, says the
        # expunged one no longer exists, and deletes the renamed one and
        # another at QUIT.
        m = self.poplib(srv=self.pop3)
        n = self.pop_numbers(m)
        self.assertEqual(set(n), set(rest))
        uids = self.imap_ids(imap)
        self.imap_ok(imap.uid('STORE', str(uids[ids[4]]), '+FLAGS', r'(\Seen)'))
        self.imap_ok(imap.uid('STORE', str(uids[ids[5]]), '+FLAGS', r'(\Deleted)'))
        self.imap_ok(imap.expunge())
        self.assertEqual(self.retr_body(m, n[ids[4]]), body[ids[4]])
        with self.assertRaises(Exception) as gone:
            m.retr(n[ids[5]])
        self.assertIn('no longer exists', str(gone.exception))
        m.dele(n[ids[4]])
        m.dele(n[ids[6]])
        self.assertTrue(m.quit().startswith(b'+OK'))
        self.assert_agree([ids[1]], 'after a POP3 session that IMAP changed under it')
        imap.noop()
        self.assertEqual(set(self.imap_ids(imap)), {ids[1]})
        self.assertEqual(self.retr_body(self.poplib(srv=self.pop3), 1), body[ids[1]])

        # Nothing lost, nothing twice: the inbox and the folder hold
        # exactly what neither side deleted.
        self.assertEqual(set(self.imap_ids(imap, 'Archive')), {ids[2]})
        self.assertEqual(len(self.p.messages('alice')), 1)
        archive = os.path.join(self.p.maildir('alice'), '.Archive')
        self.assertEqual(sum(len(os.listdir(os.path.join(archive, s))) for s in ('new', 'cur')),
                         1)

        # The quota counts the folder IMAP moved mail into: between the
        # inbox alone and the inbox with .Archive/, mail is refused.
        inbox = os.path.getsize(self.p.messages('alice')[0])
        self.p.sql("UPDATE mailboxes SET quota_bytes = ? WHERE login = 'alice'", inbox + 100)
        with self.smtp.smtp() as s:
            s.ehlo('remote.example')
            s.mail('sender@remote.example', ['SIZE=10'])
            code, text = s.rcpt('alice@example.test')
        self.assertEqual((code, text[:5]), (452, b'4.2.2'), text)

        for line in self.dovecot.log_text().splitlines():
            self.assertNotRegex(line, r'\b(Error|Panic|Fatal):', line)


if __name__ == '__main__':
    main()
