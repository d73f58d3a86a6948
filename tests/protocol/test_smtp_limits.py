"""smtp-handler --mode=mx: size, recipient and quota limits."""
import os
import unittest

from smtp_base import PASSWORD, SmtpTestCase, new_message, wire


class Size(SmtpTestCase):
    def setUp(self):
        super().setUp()
        self.p.set('max_message_bytes', 10000)

    def test_declared_size_too_big(self):
        c = self.session()
        code, text = c.cmd('MAIL FROM:<s@remote.example> SIZE=10001')
        self.assertEqual(code, 552, text)
        self.assertTrue(text[0].startswith('5.3.4'), text)
        # no transaction was opened
        self.assertEqual(c.cmd('RCPT TO:<alice@example.test>')[0], 503)
        # the session goes on; a size within the limit is fine
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example> SIZE=9000')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<alice@example.test>')[0], 250)
        self.send_data(c, new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)

    def test_huge_declared_size(self):
        c = self.session()
        for size in ('99999999999999999999', '18446744073709551616'):
            code, text = c.cmd(f'MAIL FROM:<s@remote.example> SIZE={size}')
            self.assertIn(code, (501, 552), text)
        self.assertEqual(c.cmd('NOOP')[0], 250)

    def test_actual_size_too_big(self):
        c = self.session()
        big = new_message(body=('z' * 70 + '\n') * 200)   # about 14 kB
        code, text = self.transaction(c, 's@remote.example', ['alice@example.test'],
                                      big, expect=None)
        self.assertEqual(code, 552, text)
        self.assertTrue(text[0].startswith('5.3.4'), text)
        self.assert_no_mail()
        # the session goes on and the next message fits
        small = new_message()
        self.transaction(c, 's@remote.example', ['alice@example.test'], small)
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertTrue(self.read(self.p.messages('alice')[0]).endswith(small.split(b'\n\n', 1)[1]))

    def test_lying_declared_size(self):
        # SIZE=100 declared, 14 kB sent: the limit holds while reading.
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example> SIZE=100')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<alice@example.test>')[0], 250)
        code, text = self.send_data(c, new_message(body='w' * 14000 + '\n'), expect=None)
        self.assertEqual(code, 552, text)
        self.assert_no_mail()
        self.assertEqual(c.cmd('NOOP')[0], 250)

    def test_message_just_under_limit(self):
        c = self.session()
        msg = new_message(body='')
        msg += b'v' * (9000 - len(msg)) + b'\n'
        self.transaction(c, 's@remote.example', ['alice@example.test'], msg)
        self.assertEqual(len(self.p.messages('alice')), 1)


class Recipients(SmtpTestCase):
    def test_recipient_limit(self):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        rcpts = ['alice@example.test', 'bob@example.test'] + [f'r{i}@catch.test' for i in range(98)]
        c.send(''.join(f'RCPT TO:<{r}>\r\n' for r in rcpts))
        for r in rcpts:
            code, text = c.reply()
            self.assertEqual(code, 250, (r, text))
        code, text = c.cmd('RCPT TO:<r100@catch.test>')
        self.assertEqual(code, 452, text)
        self.assertTrue(text[0].startswith('4.5.3'), text)
        # the first 100 still get the message
        self.send_data(c, new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(len(self.p.messages('bob')), 1)
        self.assertEqual(len(self.p.messages('carol')), 1)  # one copy for 98 catch-all addresses
        # and the limit is per message
        self.transaction(c, 's@remote.example', ['bob@example.test'], new_message())
        self.assertEqual(len(self.p.messages('bob')), 2)


class JunkCommands(SmtpTestCase):
    # Idle chatter cannot hold a connection slot: 100 NOOP/RSET/VRFY/HELP
    # without a message in between, then 421 (Postfix's junk limit).

    def test_junk_limit_then_421(self):
        c = self.session()
        for i in range(100):
            code, text = c.cmd('NOOP' if i % 2 else 'RSET')
            self.assertEqual(code, 250, (i, text))
        code, text = c.cmd('NOOP')
        self.assertEqual(code, 421, text)
        self.assertTrue(text[0].startswith('4.7.0'), text)

    def test_accepted_message_resets_the_count(self):
        c = self.session()
        for _ in range(90):
            self.assertEqual(c.cmd('NOOP')[0], 250)
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        for i in range(100):
            self.assertEqual(c.cmd('NOOP')[0], 250, i)


class Quota(SmtpTestCase):
    # dave's quota is 3000 bytes (smtp_base)

    def test_full_mailbox_is_a_temporary_failure(self):
        c = self.session()
        self.transaction(c, 's@remote.example', ['dave@example.test'],
                         new_message(body='q' * 2400 + '\n'))  # fits
        self.assertEqual(len(self.p.messages('dave')), 1)
        # no SIZE= declared: the quota is checked at the end of DATA
        code, text = self.transaction(c, 's@remote.example', ['dave@example.test'],
                                      new_message(body='r' * 1000 + '\n'), expect=None)
        self.assertEqual(code, 452, text)
        self.assertTrue(text[0].startswith('4.2.2'), text)
        self.assertEqual(len(self.p.messages('dave')), 1)
        # larger than the whole quota: it can never fit
        code, text = self.transaction(c, 's@remote.example', ['dave@example.test'],
                                      new_message(body='s' * 4000 + '\n'), expect=None)
        self.assertEqual(code, 552, text)
        self.assertTrue(text[0].startswith('5.2.2'), text)
        # with another recipient that takes it, both get it (one DATA
        # reply cannot refuse only dave) ...
        self.transaction(c, 's@remote.example', ['dave@example.test', 'alice@example.test'],
                         new_message(body='t' * 1000 + '\n'))
        self.assertEqual(len(self.p.messages('dave')), 2)
        self.assertEqual(len(self.p.messages('alice')), 1)
        # ... and now dave is over quota: 452 4.2.2 at RCPT, alice still gets hers
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        code, text = c.cmd('RCPT TO:<dave@example.test>')
        self.assertEqual(code, 452, text)
        self.assertTrue(text[0].startswith('4.2.2'), text)
        self.assertEqual(c.cmd('RCPT TO:<alice@example.test>')[0], 250)
        self.send_data(c, new_message())
        self.assertEqual(len(self.p.messages('dave')), 2)
        self.assertEqual(len(self.p.messages('alice')), 2)
        # when room is made, dave takes mail again
        self.p.sql("UPDATE mailboxes SET quota_bytes = 100000 WHERE login = 'dave'")
        self.transaction(c, 's@remote.example', ['dave@example.test'], new_message())
        self.assertEqual(len(self.p.messages('dave')), 3)

    def test_forward_into_full_mailbox(self):
        self.p.add_forward('team@example.test', 'dave@example.test')
        self.p.add_forward('team@example.test', 'bob@example.test')
        c = self.session()
        # fill dave: with alice also taking it, an oversized message lands
        self.transaction(c, 's@remote.example', ['dave@example.test', 'alice@example.test'],
                         new_message(body='q' * 3500 + '\n'))
        self.transaction(c, 's@remote.example', ['team@example.test'], new_message())
        self.assertEqual(len(self.p.messages('dave')), 1)
        self.assertEqual(len(self.p.messages('bob')), 1)

    def test_declared_size_over_quota_is_permanent(self):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example> SIZE=5000')[0], 250)
        code, text = c.cmd('RCPT TO:<dave@example.test>')
        self.assertEqual(code, 552, text)
        self.assertTrue(text[0].startswith('5.2.2'), text)
        self.assertEqual(c.cmd('RCPT TO:<alice@example.test>')[0], 250)
        self.send_data(c, new_message())
        self.assertEqual(self.p.messages('dave'), [])
        self.assertEqual(len(self.p.messages('alice')), 1)

    def test_mailbox_without_quota_takes_big_mail(self):
        c = self.session()
        for _ in range(3):
            self.transaction(c, 's@remote.example', ['bob@example.test'],
                             new_message(body='b' * 20000 + '\n'))
        self.assertEqual(len(self.p.messages('bob')), 3)


class QuotaFolders(SmtpTestCase):
    """A quota counts the Maildir++ folders an IMAP client keeps (.Sent/,
    .Trash/, ...), as Dovecot's Maildir++ quota does; POP3 still shows
    the inbox alone (issue 22). dave's quota is 3000 bytes."""

    def folder_message(self, folder, size, where='cur'):
        """A message of size bytes in dave's folder, named as Dovecot's
        IMAP names what a client saves there (APPEND)."""
        md = os.path.join(self.p.maildir('dave'), '.' + folder)
        for sub in ('cur', 'new', 'tmp'):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        name = f'1700000000.M{size}P1.imap,S={size},W={size + 20}'
        if where == 'cur':
            name += ':2,S'
        path = os.path.join(md, where, name)
        with open(path, 'wb') as f:
            f.write(b'x' * size)
        return path

    def test_sent_folder_fills_the_mailbox(self):
        # dave's inbox is empty, his Sent folder holds 2900 bytes
        os.makedirs(os.path.join(self.p.maildir('dave'), 'new'))
        os.makedirs(os.path.join(self.p.maildir('dave'), 'cur'))
        sent = self.folder_message('Sent', 2900)
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example> SIZE=200')[0], 250)
        code, text = c.cmd('RCPT TO:<dave@example.test>')
        self.assertEqual(code, 452, text)
        self.assertEqual(text[0], '4.2.2 <dave@example.test>: Recipient address rejected: '
                         'mailbox full', text)
        self.assertTrue(self.log_has('event=rcpt', 'result=mailbox_full', 'mailbox=dave',
                                     'used=2900'), self.p.log_text())
        self.assertEqual(c.cmd('RSET')[0], 250)

        # without SIZE=, the end of DATA counts the folder too
        os.unlink(sent)
        trash = self.folder_message('Trash', 2000, where='new')
        code, text = self.transaction(c, 's@remote.example', ['dave@example.test'],
                                      new_message(body='r' * 1500 + '\n'), expect=None)
        self.assertEqual(code, 452, text)
        self.assertTrue(text[0].startswith('4.2.2'), text)
        self.assertEqual(self.p.messages('dave'), [])

        # room made in the folder: dave takes mail again, and POP3 shows
        # him the inbox alone, not what his folders hold
        self.folder_message('Drafts', 100)
        os.unlink(trash)
        self.transaction(c, 's@remote.example', ['dave@example.test'], new_message())
        self.assertEqual(len(self.p.messages('dave')), 1)
        pop = self.p.serve('pop3-handler/pop3-handler')
        m = pop.pop3('dave', PASSWORD)
        try:
            count, size = m.stat()
            self.assertEqual(count, 1)
            self.assertLess(size, 1000)
        finally:
            m.quit()

    def log_has(self, *fields):
        return any(all(f in line.split() for f in fields)
                   for line in self.p.log_text().splitlines())


if __name__ == '__main__':
    unittest.main()
