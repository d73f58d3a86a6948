"""smtp-handler --mode=mx: what lands in the Maildirs, and where."""
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time
import unittest

from smtp_base import (BODY_MARKER, MAILDIR_NAME, SmtpTestCase, new_message, stored)


class Body(SmtpTestCase):
    def test_exact_body_smtplib(self):
        body = (b'first line\n'
                b'.leading dot\n'
                b'..two dots\n'
                b'.\n'
                b'trailing spaces   \n'
                b'\ttab\tinside\n'
                b'\n\n'
                b'caf\xc3\xa9 8-bit\n'
                + b'x' * 2500 + b'\n'
                + BODY_MARKER.encode() + b'\n'
                b'last line')
        msg = new_message(body=body.decode('utf-8'))
        s = self.smtp()
        s.ehlo('client.example')
        # smtplib leaves the line ends of bytes alone: give it CRLF
        refused = s.sendmail('sender@remote.example', ['alice@example.test'],
                             msg.replace(b'\n', b'\r\n'),
                             mail_options=['BODY=8BITMIME'])
        s.quit()
        self.assertEqual(refused, {})
        data = self.only_message('alice')
        fields, rest = self.split_prefix(data)
        self.assertEqual(rest, stored(msg))
        self.assertNotIn(b'\r', data)

    def test_dot_unstuffing(self):
        c = self.session()
        self.start_data(c)
        c.send(b'Subject: dots\r\n\r\n'
               b'..a\r\n'        # stuffed ".a"
               b'...\r\n'        # stuffed ".."
               b'..\r\n'         # stuffed "."
               b'.x\r\n'         # a dot the client forgot to double: removed
               b'a.b\r\n'        # dots elsewhere stay
               b'. \r\n'
               b'.\r\n')
        code, text = c.reply()
        self.assertEqual(code, 250, text)
        self.assertEqual(c.cmd('QUIT')[0], 221)
        _, rest = self.split_prefix(self.only_message('alice'))
        self.assertEqual(rest, b'Subject: dots\n\n.a\n..\n.\nx\na.b\n \n')

    def test_long_lines_and_dots_at_read_boundaries(self):
        # Lines around the reader's chunk size, each followed by a dotted
        # line, so CRLF and the stuffed dot fall on every boundary.
        body = b''
        for n in list(range(4090, 4100)) + [8190, 8191, 8192, 8193, 20000]:
            body += b'L' * n + b'\n..dot after %d\n.\n' % n
        self.assert_body_kept(body.decode())

    def test_nul_stored_faithfully(self):
        c = self.session()
        self.start_data(c)
        c.send(b'Subject: nul\r\n\r\nbefore\x00after\r\n\x00\x00\r\nend\r\n.\r\n')
        code, text = c.reply()
        if code == 250:
            _, rest = self.split_prefix(self.only_message('alice'))
            self.assertEqual(rest, b'Subject: nul\n\nbefore\x00after\n\x00\x00\nend\n')
        else:
            # Refusing is allowed too, but then with a permanent error and
            # nothing stored, never a silently truncated message.
            self.assertTrue(500 <= code < 600, text)
            self.assert_no_mail()
        self.assertEqual(c.cmd('NOOP')[0], 250)

    def test_swaks(self):
        if not shutil.which('swaks'):
            self.skipTest('swaks is not installed')
        body = f'Sent by swaks.\n{BODY_MARKER}\n..dotted line\n'
        r = subprocess.run(['swaks', '--server', self.srv.host, '--port', str(self.srv.port),
                            '--from', 'swaks@remote.example', '--to', 'bob@example.test',
                            '--helo', 'swaks.example', '--header', 'Subject: via swaks',
                            '--body', body, '--timeout', '30'],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace')[-2000:])
        data = self.only_message('bob')
        self.assertIn(b'Subject: via swaks\n', data)
        self.assertIn(b'\n\nSent by swaks.\n' + BODY_MARKER.encode() + b'\n..dotted line\n', data)
        self.assertTrue(data.startswith(b'Return-Path: <swaks@remote.example>\n'))

    def test_curl(self):
        if not shutil.which('curl'):
            self.skipTest('curl is not installed')
        msg = new_message(subject='via curl', body=f'curl body\n.one dot\n{BODY_MARKER}\n')
        path = os.path.join(self.p.dir, 'curl-msg.eml')
        with open(path, 'wb') as f:
            f.write(msg.replace(b'\n', b'\r\n'))  # curl sends the file as it is
        r = subprocess.run(['curl', '-sS', '--max-time', '30',
                            f'smtp://{self.srv.host}:{self.srv.port}/client.example',
                            '--mail-from', 'curl@remote.example',
                            '--mail-rcpt', 'alice@other.test',
                            '--mail-rcpt', 'carol-anything@catch.test',
                            '--upload-file', path],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors='replace'))
        for login in ('alice', 'carol'):
            _, rest = self.split_prefix(self.only_message(login))
            self.assertEqual(rest, stored(msg))


class Headers(SmtpTestCase):
    def test_return_path_delivered_to_received(self):
        msg = new_message()
        c = self.session('client.example')
        self.transaction(c, 'sender@remote.example', ['alice@example.test'], msg)
        c.cmd('QUIT')
        data = self.only_message('alice')
        (rp, dt, rcvd), rest = self.split_prefix(data)
        self.assertEqual(rp, b'Return-Path: <sender@remote.example>')
        self.assertEqual(dt, b'Delivered-To: alice@example.test')
        self.assertTrue(rcvd.startswith(b'Received: from client.example '), rcvd)
        self.assertIn(b'[127.0.0.1]', rcvd)
        self.assertRegex(rcvd, rb'by mx\.test\.example\b')
        self.assertRegex(rcvd, rb'\bwith ESMTP\b')
        self.assertRegex(rcvd, rb'for <alice@example\.test>')
        # RFC 5322 date at the end
        self.assertRegex(rcvd, rb'; \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$')
        self.assertEqual(rest, stored(msg))

    def test_missing_date_and_message_id_added_for_our_users_only(self):
        # RFC 6409 8.2, 8.3: a message one of our users sends without
        # Date: or Message-ID: gets them under our Received:; mail from
        # outside is stored as it came.
        bare = b'From: a@example.test\nTo: alice@example.test\nSubject: no id\n\nbody\n'
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test'], bare)
        _, rest = self.split_prefix(self.only_message('alice'))
        self.assertEqual(rest, stored(bare))
        os.unlink(self.p.messages('alice')[0])

        self.p.add_relay_network('127.0.0.1')
        c = self.session()
        self.transaction(c, 'a@example.test', ['alice@example.test'], bare)
        (_, _, rcvd, date, mid), rest = self.split_prefix(self.only_message('alice'), 5)
        self.assertTrue(rcvd.startswith(b'Received: '), rcvd)
        self.assertRegex(date, rb'^Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$')
        self.assertRegex(mid, rb'^Message-ID: <\d+\.[0-9A-Za-z]+@mx\.test\.example>$')
        self.assertEqual(rest, stored(bare))
        # The file name's sizes count the added fields.
        name = os.path.basename(self.p.messages('alice')[0])
        data = self.only_message('alice')
        self.assertIn(f',S={len(data)},'.encode(), name.encode())
        wire_size = len(data) + data.count(b'\n')
        self.assertIn(f',W={wire_size}'.encode(), name.encode())
        os.unlink(self.p.messages('alice')[0])

        # Only what is missing; and a message with both is left alone.
        with_id = b'Message-ID: <x1@example.test>\n' + bare
        full = b'Date: Mon, 23 Nov 2026 10:00:00 +0000\n' + with_id
        for msg, added in ((with_id, [b'Date: ']), (full, [])):
            self.transaction(c, 'a@example.test', ['alice@example.test'], msg)
            fields, rest = self.split_prefix(self.only_message('alice'), 3 + len(added))
            for field, start in zip(fields[3:], added):
                self.assertTrue(field.startswith(start), field)
            self.assertEqual(rest, stored(msg))
            os.unlink(self.p.messages('alice')[0])
        c.cmd('QUIT')

    def test_helo_gives_with_smtp_and_null_sender(self):
        msg = new_message()
        c = self.connect()
        self.assertEqual(c.cmd('HELO old.example')[0], 250)
        self.transaction(c, '', ['bob@example.test'], msg)
        (rp, dt, rcvd), rest = self.split_prefix(self.only_message('bob'))
        self.assertEqual(rp, b'Return-Path: <>')
        self.assertEqual(dt, b'Delivered-To: bob@example.test')
        self.assertRegex(rcvd, rb'\bwith SMTP\b')
        self.assertNotRegex(rcvd, rb'\bwith ESMTP')
        self.assertIn(b'old.example', rcvd)

    def test_delivered_to_per_mailbox_copy(self):
        msg = new_message()
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@other.test', 'bob@example.test'], msg)
        a = self.only_message('alice')
        b = self.only_message('bob')
        (arp, adt, arcvd), arest = self.split_prefix(a)
        (brp, bdt, brcvd), brest = self.split_prefix(b)
        self.assertEqual(adt, b'Delivered-To: alice@other.test')
        self.assertEqual(bdt, b'Delivered-To: bob@example.test')
        self.assertEqual(arp, brp)
        self.assertEqual(arcvd, brcvd)
        self.assertEqual(arest, stored(msg))
        self.assertEqual(brest, stored(msg))
        # two recipients: the Received line names none of them
        self.assertNotIn(b' for <', arcvd)

    def test_received_loop_refused(self):
        hops = ''.join(f'Received: from hop{i}.example by hop{i + 1}.example; '
                       f'Mon, 1 Jan 2024 00:00:00 +0000\n' for i in range(101))
        c = self.session()
        code, text = self.transaction(c, 's@remote.example', ['alice@example.test'],
                                      new_message(extra_headers=hops), expect=None)
        self.assertEqual(code, 554, text)
        self.assertTrue(text[0].startswith('5.4.6'), text)
        self.assert_no_mail()
        # fewer hops is fine, and the session goes on
        hops = ''.join(f'Received: from hop{i}.example by x; Mon, 1 Jan 2024 00:00:00 +0000\n'
                       for i in range(30))
        self.transaction(c, 's@remote.example', ['alice@example.test'],
                         new_message(extra_headers=hops))
        self.assertEqual(len(self.p.messages('alice')), 1)

    def test_received_in_body_is_not_a_hop(self):
        body = ''.join(f'Received: from hop{i} by x; Mon, 1 Jan 2024 00:00:00 +0000\n'
                       for i in range(150))
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message(body=body))
        self.assertEqual(len(self.p.messages('alice')), 1)


class MaildirFiles(SmtpTestCase):
    def test_name_format_and_sizes(self):
        c = self.session()
        msgs = [new_message(body=f'one\n{BODY_MARKER}\n'),
                new_message(body='two\n' + 'y' * 5000 + '\n')]
        before = time.time()
        for m in msgs:
            self.transaction(c, 's@remote.example', ['alice@example.test'], m)
        after = time.time()
        c.cmd('QUIT')
        md = self.p.maildir('alice')
        for sub in ('cur', 'new', 'tmp'):
            self.assertTrue(os.path.isdir(os.path.join(md, sub)), sub)
        self.assertEqual(os.listdir(os.path.join(md, 'tmp')), [])
        paths = self.p.messages('alice')
        self.assertEqual(len(paths), 2)
        pids = set(re.findall(r'postage-smtp\[(\d+)\]: .*event=connect', self.p.log_text()))
        self.assertEqual(len(pids), 1, self.p.log_text())
        pid = pids.pop()
        host = socket.gethostname().replace('/', r'\057').replace(':', r'\072')
        names = set()
        for path in paths:
            self.assertEqual(os.path.dirname(path), os.path.join(md, 'new'))
            name = os.path.basename(path)
            m = MAILDIR_NAME.match(name)
            self.assertIsNotNone(m, name)
            data = self.read(path)
            self.assertEqual(int(m['S']), len(data), name)
            self.assertEqual(int(m['W']), len(data) + data.count(b'\n'), name)
            self.assertLessEqual(int(m['usec']), 999999)
            self.assertGreaterEqual(int(m['sec']), int(before) - 1)
            self.assertLessEqual(int(m['sec']), int(after) + 1)
            self.assertEqual(m['pid'], pid)
            self.assertEqual(m['host'], host)
            names.add(name.split(',')[0])
        self.assertEqual(len(names), 2)
        # the staging file is gone
        for dirpath, _dirs, files in os.walk(self.p.spool_dir):
            self.assertEqual(files, [], dirpath)

    def test_maildir_made_on_first_delivery(self):
        self.assertFalse(os.path.exists(self.p.maildir('bob')))
        c = self.session()
        self.transaction(c, 's@remote.example', ['bob@example.test'], new_message())
        md = self.p.maildir('bob')
        self.assertEqual(sorted(os.listdir(md)), ['cur', 'new', 'tmp'])
        self.assertEqual(len(os.listdir(os.path.join(md, 'new'))), 1)

    def test_maildir_missing_tmp_and_new_is_completed(self):
        # A Maildir someone made by hand with cur/ only.
        md = self.p.maildir('bob')
        os.makedirs(os.path.join(md, 'cur'))
        c = self.session()
        self.transaction(c, 's@remote.example', ['bob@example.test'], new_message())
        self.assertEqual(sorted(os.listdir(md)), ['cur', 'new', 'tmp'])
        self.assertEqual(len(os.listdir(os.path.join(md, 'new'))), 1)

    def test_big_message_is_stored_whole(self):
        # 3 MiB in lines of every length up to 998 octets: the staging
        # file is written in blocks, not line by line.
        lines = [(b'%06d ' % i) + b'z' * (i % 990) for i in range(6000)]
        body = b'\n'.join(lines) + b'\n'
        self.assert_body_kept(body.decode())


class Staging(SmtpTestCase):
    """A message is staged in memory while it is small (spool.h): a local
    delivery makes no file in the spool; a large one, or one that is queued,
    still arrives whole."""

    def spool_tmp_state(self):
        tmp = os.path.join(self.p.spool_dir, 'tmp')
        if not os.path.isdir(tmp):
            return None
        st = os.stat(tmp)
        return (sorted(os.listdir(tmp)), st.st_mtime_ns, st.st_ctime_ns)

    def test_local_delivery_touches_no_spool_file(self):
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        before = self.spool_tmp_state()
        time.sleep(0.05)  # a later change would show in the mtime
        for i in range(3):
            self.transaction(c, 's@remote.example', ['alice@example.test', 'bob@example.test'],
                             new_message(subject=f'n{i}'))
        # A file made and removed in spool_dir/tmp would change its mtime.
        self.assertEqual(self.spool_tmp_state(), before)
        self.assertEqual(len(self.p.messages('alice')), 4)
        self.assertEqual(len(self.p.messages('bob')), 3)

    def test_first_message_without_a_spool_makes_it(self):
        # Staged in memory, a message for two mailboxes is the first to need
        # spool_dir (its delivery journal goes in spool_dir/links/).
        shutil.rmtree(self.p.spool_dir, ignore_errors=True)
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test', 'bob@example.test'],
                         new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(len(self.p.messages('bob')), 1)
        self.assertEqual(os.stat(self.p.spool_dir).st_mode & 0o777, 0o700)
        self.assertEqual(os.listdir(os.path.join(self.p.spool_dir, 'links')), [])

    def test_spool_unusable_refuses_only_what_needs_it(self):
        # A spool that cannot be made: a small local message needs none and
        # is delivered; one past the in-memory bound must move to the spool,
        # cannot, and is refused whole with nothing delivered.
        self.p.set('spool_dir', '/dev/null/spool')
        lines = [(b'%06d ' % i) + b'r' * 500 for i in range(3000)]
        big = new_message(body=(b'\n'.join(lines) + b'\n').decode())
        self.assertGreater(len(big), 1024 * 1024)
        c = self.session()
        code, text = self.transaction(c, 's@remote.example', ['alice@example.test'], big,
                                      expect=None)
        self.assertEqual(code, 451, text)
        self.assertEqual(self.p.messages('alice'), [])
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)

    def queued_file(self):
        rows = self.p.sql('SELECT id FROM queue_messages')
        self.assertEqual(len(rows), 1, rows)
        return self.read(os.path.join(self.p.spool_dir, 'queue', rows[0][0]))

    def test_small_queued_message_is_written_whole(self):
        self.p.add_forward('ext@example.test', 'u@elsewhere.test')
        self.p.add_forward('ext@example.test', 'alice@example.test')
        msg = new_message(body='short body\n' + BODY_MARKER + '\n')
        c = self.session()
        self.transaction(c, 's@remote.example', ['ext@example.test'], msg)
        queued = self.queued_file()
        self.assertTrue(queued.startswith(b'Received: '), queued[:80])
        self.assertTrue(queued.endswith(stored(msg)), queued[-200:])
        _, rest = self.split_prefix(self.only_message('alice'))
        self.assertTrue(rest.endswith(stored(msg)))
        tmp = os.path.join(self.p.spool_dir, 'tmp')
        self.assertEqual(os.listdir(tmp) if os.path.isdir(tmp) else [], [])

    def test_large_message_moves_to_disk_and_is_queued_whole(self):
        # 3 MiB: past the in-memory bound, so the staging file moves to the
        # spool while DATA is still arriving, then is linked into the queue.
        lines = [(b'%06d ' % i) + b'q' * (i % 997) for i in range(6500)]
        msg = new_message(body=(b'\n'.join(lines) + b'\n').decode())
        self.assertGreater(len(msg), 2 * 1024 * 1024)
        self.p.add_forward('ext@example.test', 'u@elsewhere.test')
        self.p.add_forward('ext@example.test', 'bob@example.test')
        c = self.session()
        self.transaction(c, 's@remote.example', ['ext@example.test', 'alice@example.test'], msg)
        self.assertTrue(self.queued_file().endswith(stored(msg)))
        for login in ('alice', 'bob'):
            _, rest = self.split_prefix(self.only_message(login))
            self.assertTrue(rest.endswith(stored(msg)), login)
        tmp = os.path.join(self.p.spool_dir, 'tmp')
        self.assertEqual(os.listdir(tmp) if os.path.isdir(tmp) else [], [])


class Routing(SmtpTestCase):
    def test_catch_all(self):
        c = self.session()
        m1, m2 = new_message(), new_message()
        self.transaction(c, 's@remote.example', ['whoever@catch.test'], m1)
        self.transaction(c, 's@remote.example', ['special@catch.test'], m2)
        (_, dt, _), rest = self.split_prefix(self.only_message('carol'))
        self.assertEqual(dt, b'Delivered-To: whoever@catch.test')
        self.assertEqual(rest, stored(m1))
        # an exact address wins over the catch-all
        (_, dt, _), rest = self.split_prefix(self.only_message('bob'))
        self.assertEqual(dt, b'Delivered-To: special@catch.test')
        self.assertEqual(rest, stored(m2))
        # a domain without a catch-all has none
        code, text = c.cmd('RCPT TO:<whoever@example.test>')
        self.assertEqual(code, 503)  # no MAIL yet: transactions were reset
        c.cmd('MAIL FROM:<s@remote.example>')
        code, text = c.cmd('RCPT TO:<whoever@example.test>')
        self.assertEqual(code, 550, text)
        self.assertEqual(text[0], '5.1.1 <whoever@example.test>: user unknown')

    def test_mailbox_with_addresses_in_two_domains(self):
        c = self.session()
        for rcpt in ('alice@example.test', 'alice@other.test', 'info@other.test'):
            self.transaction(c, 's@remote.example', [rcpt], new_message())
        got = sorted(self.split_prefix(self.read(p))[0][1] for p in self.p.messages('alice'))
        self.assertEqual(got, [b'Delivered-To: alice@example.test',
                               b'Delivered-To: alice@other.test',
                               b'Delivered-To: info@other.test'])
        self.assertEqual(self.all_messages(), self.p.messages('alice'))

    def test_two_addresses_of_one_mailbox_in_one_message_give_one_copy(self):
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test', 'info@other.test'],
                         new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)

    def test_forward_to_two_mailboxes(self):
        msg = new_message()
        c = self.session()
        self.transaction(c, 's@remote.example', ['list@example.test'], msg)
        for login in ('alice', 'bob'):
            (rp, dt, _), rest = self.split_prefix(self.only_message(login))
            self.assertEqual(dt, b'Delivered-To: list@example.test')
            self.assertEqual(rp, b'Return-Path: <s@remote.example>')
            self.assertEqual(rest, stored(msg))
        self.assertEqual(len(self.all_messages()), 2)
        self.assert_nothing_queued()

    def test_forward_to_remote_target_is_queued(self):
        # The administrator's forward may point anywhere; that is not the
        # client relaying.
        self.p.add_forward('ext@example.test', 'u@elsewhere.test')
        self.p.add_forward('ext@example.test', 'alice@example.test')
        c = self.session()
        self.transaction(c, 's@remote.example', ['ext@example.test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(self.p.sql('SELECT recipient, orig_rcpt FROM queue_recipients'),
                         [('u@elsewhere.test', 'ext@example.test')])

    def test_forward_and_direct_recipient_give_one_copy(self):
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test', 'list@example.test'],
                         new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertEqual(len(self.p.messages('bob')), 1)

    def test_forward_loop(self):
        c = self.session()
        c.cmd('MAIL FROM:<s@remote.example>')
        for rcpt in ('loop1@example.test', 'loop2@example.test', 'self@example.test'):
            code, text = c.cmd(f'RCPT TO:<{rcpt}>')
            self.assertEqual(code, 550, (rcpt, text))
            self.assertTrue(text[0].startswith('5.4.6'), text)
        code, text = c.cmd('RCPT TO:<bob@example.test>')
        self.assertEqual(code, 250, text)
        self.send_data(c, new_message())
        self.assertEqual(self.all_messages(), self.p.messages('bob'))
        self.assertEqual(len(self.all_messages()), 1)
        self.assertIn('forward_loop', self.p.log_text())

    def test_unknown_user(self):
        c = self.session()
        c.cmd('MAIL FROM:<s@remote.example>')
        code, text = c.cmd('RCPT TO:<nobody@example.test>')
        self.assertEqual(code, 550)
        self.assertTrue(text[0].startswith('5.1.1'), text)
        self.assertIn('nobody@example.test', text[0])
        code, text = c.cmd('DATA')
        self.assertEqual(code // 100, 5, text)  # no valid recipients
        self.assertEqual(c.cmd('NOOP')[0], 250)
        self.assert_no_mail()

    def test_uppercase_domain_delivers(self):
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@EXAMPLE.TEST'], new_message())
        self.transaction(c, 's@remote.example', ['Someone@Catch.Test'], new_message())
        self.transaction(c, 's@remote.example', ['list@Example.Test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 2)
        self.assertEqual(len(self.p.messages('carol')), 1)
        self.assertEqual(len(self.p.messages('bob')), 1)
        self.assert_nothing_queued()

    def test_postmaster_without_domain(self):
        # RFC 5321 4.5.1: <postmaster> must be accepted; here it is the
        # postmaster of a hosted domain, delivered locally.
        self.p.add_address('postmaster@example.test', 'bob')
        c = self.session()
        self.transaction(c, 's@remote.example', ['Postmaster'], new_message())
        self.assertEqual(len(self.all_messages()), 1)
        self.assert_nothing_queued()

    def test_disabled_mailbox_refused(self):
        self.p.sql("UPDATE mailboxes SET enabled = 0 WHERE login = 'bob'")
        c = self.session()
        c.cmd('MAIL FROM:<s@remote.example>')
        code, text = c.cmd('RCPT TO:<bob@example.test>')
        self.assertEqual(code // 100, 5, text)
        self.assert_no_mail()

    def test_settings_change_needs_no_restart(self):
        c = self.session()
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        c.cmd('QUIT')
        self.p.set('hostname', 'renamed.test.example')
        c = self.connect(greet=False)
        code, text = c.reply()
        self.assertEqual(code, 220)
        self.assertTrue(text[0].startswith('renamed.test.example '), text)


if __name__ == '__main__':
    unittest.main()
