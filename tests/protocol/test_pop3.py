"""pop3-handler: RFC 1939 with CAPA (RFC 2449) and response codes (RFC
3206), against the Maildir: sizes, TOP, UIDL, deletion, the snapshot."""
import os
import re
import socket

from harness import main
from pop3_base import (BODY_MARKER, PASSWORD, Pop3TestCase, maildir_base, new_message,
                       wire_lines, wire_octets)


class Greeting(Pop3TestCase):
    def test_greeting_and_capa(self):
        c = self.connect()
        self.assertEqual(c.cmd('CAPA'), '+OK Capability list follows')
        capa = [l.decode() for l in c.multi()]
        for want in ('USER', 'TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING',
                     'IMPLEMENTATION postage'):
            self.assertIn(want, capa)
        # No certificate configured: nothing TLS is offered, and AUTH PLAIN
        # is offered only over TLS.
        self.assertNotIn('STLS', capa)
        self.assertFalse([l for l in capa if l.startswith('SASL')], capa)
        self.assertFalse([l for l in capa if l.startswith(('EXPIRE', 'LOGIN-DELAY', 'APOP'))])
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        self.assertTrue(c.closed())

    def test_capa_in_transaction(self):
        c = self.session()
        self.assertTrue(c.cmd('CAPA').startswith('+OK'))
        capa = [l.decode() for l in c.multi()]
        self.assertIn('TOP', capa)
        self.assertIn('UIDL', capa)
        self.assertNotIn('USER', capa)

    def test_apop_not_offered(self):
        c = self.connect()
        # The greeting has no <timestamp>: APOP needs plaintext passwords.
        self.assertTrue(c.cmd('APOP alice 0123456789abcdef0123456789abcdef').startswith('-ERR'))

    def test_empty_mailbox_without_maildir(self):
        self.assertFalse(os.path.exists(self.p.maildir('alice')))
        c = self.session()
        self.assertEqual(c.cmd('STAT'), '+OK 0 0')
        self.assertTrue(c.cmd('LIST').startswith('+OK'))
        self.assertEqual(c.multi(), [])
        self.assertTrue(c.cmd('UIDL').startswith('+OK'))
        self.assertEqual(c.multi(), [])
        self.assertEqual(c.cmd('RETR 1'), '-ERR no such message')
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        self.assertFalse(os.path.exists(self.p.maildir('alice')))


class Sizes(Pop3TestCase):
    MESSAGES = [
        # (content, sizes in the name)
        (new_message('with W'), True),
        (b'Subject: no sizes\n\n.leading dot\n..two\n.\nlast line without LF', False),
        (b'Subject: only S\n\nbody\n\n\n', 'S'),
        (b'Subject: empty body\n\n', False),
        (b'', False),
        (b'Subject: long\n\n' + b'y' * 20000 + b'\n' + (b'.x\n' * 3000), True),
    ]

    def test_list_equals_retr_octets(self):
        for data, sizes in self.MESSAGES:
            self.put(data, sizes=sizes)
        m = self.poplib()
        count, total = m.stat()
        self.assertEqual(count, len(self.MESSAGES))
        _, listing, _ = m.list()
        sizes = [int(l.split()[1]) for l in listing]
        self.assertEqual(total, sum(sizes))
        for n, (data, _) in enumerate(self.MESSAGES, 1):
            resp, lines, octets = m.retr(n)
            self.assertEqual(resp, f'+OK {sizes[n - 1]} octets'.encode())
            self.assertEqual(octets, sizes[n - 1], f'message {n}: LIST said {sizes[n - 1]}, '
                             f'RETR sent {octets}')
            self.assertEqual(sizes[n - 1], wire_octets(data))
            self.assertEqual(lines, wire_lines(data), f'message {n}')
            self.assertEqual(m.list(n), f'+OK {n} {sizes[n - 1]}'.encode())
        m.quit()

    def test_wire_form_stuffed(self):
        data = b'Subject: dots\n\n.a\n..\n.\nx.y\n. \nend'
        self.put(data, sizes=False)
        c = self.session()
        self.assertEqual(c.cmd('RETR 1'), f'+OK {wire_octets(data)} octets')
        raw = c.raw_multi()
        self.assertEqual(raw, b'Subject: dots\r\n\r\n..a\r\n...\r\n..\r\nx.y\r\n.. \r\nend\r\n.\r\n')
        # The size was read once and kept: the same answer again.
        self.assertEqual(c.cmd('LIST 1'), f'+OK 1 {wire_octets(data)}')

    def test_file_with_crlf_keeps_it(self):
        # Another MDA stored CRLF line ends: they go out as they are (no
        # CR CR LF), and LIST counts what RETR sends.
        data = b'Subject: crlf\r\n\r\n.dot\r\nbare\rcr\nlast'
        self.put(data, sizes=False)
        c = self.session()
        want = b'Subject: crlf\r\n\r\n..dot\r\nbare\rcr\r\nlast\r\n'
        # The size leaves out the dot stuffing, as Dovecot's W= does.
        size = len(want) - 1
        self.assertEqual(c.cmd('LIST 1'), f'+OK 1 {size}')
        self.assertEqual(c.cmd('RETR 1'), f'+OK {size} octets')
        self.assertEqual(c.raw_multi(), want + b'.\r\n')

    def test_w_from_name_is_used(self):
        # An honest W= is what LIST says, without reading the file.
        data = new_message('w')
        self.put(data)
        wire_size = len(data) + data.count(b'\n')
        c = self.session()
        self.assertEqual(c.cmd('LIST 1'), f'+OK 1 {wire_size}')


class Top(Pop3TestCase):
    def test_top(self):
        data = (b'From: a@b.example\nSubject: top\n\nline 1\n.line 2\nline 3\nline 4\n'
                + BODY_MARKER.encode() + b'\n')
        self.put(data)
        m = self.poplib()
        head = [b'From: a@b.example', b'Subject: top', b'']
        self.assertEqual(m.top(1, 0)[1], head)
        self.assertEqual(m.top(1, 2)[1], head + [b'line 1', b'.line 2'])
        self.assertEqual(m.top(1, 5)[1], wire_lines(data))
        self.assertEqual(m.top(1, 99999999999)[1], wire_lines(data))
        # TOP does not count as retrieval and marks nothing.
        self.assertEqual(m.stat()[0], 1)
        m.quit()

    def test_top_without_body(self):
        self.put(b'Subject: only headers\nX-A: b', sizes=False)
        m = self.poplib()
        self.assertEqual(m.top(1, 3)[1], [b'Subject: only headers', b'X-A: b'])
        self.assertEqual(m.top(1, 0)[1], [b'Subject: only headers', b'X-A: b'])
        m.quit()

    def test_top_syntax(self):
        self.put(new_message())
        c = self.session()
        for bad in ('TOP', 'TOP 1', 'TOP 1 -1', 'TOP x 1', 'TOP 1 1 1', 'TOP 1 a'):
            r = c.cmd(bad)
            self.assertTrue(r.startswith('-ERR'), f'{bad!r}: got {r!r}')
        self.assertEqual(c.cmd('TOP 2 0'), '-ERR no such message')
        self.assertTrue(c.cmd('TOP 1 0').startswith('+OK'))
        c.multi()


class Uidl(Pop3TestCase):
    def test_stable_across_sessions_and_new_to_cur(self):
        bases = [maildir_base(1700000000 + i) for i in range(3)]
        for b in bases:
            self.put(new_message(), base=b)
        m = self.poplib()
        _, first, _ = m.uidl()
        m.quit()
        self.assertEqual(first, [f'{i} {b}'.encode() for i, b in enumerate(bases, 1)])
        # The files moved to cur/ with ":2,"; the UIDLs did not change.
        names = sorted(os.listdir(os.path.join(self.p.maildir('alice'), 'cur')))
        self.assertEqual(len(names), 3)
        for n in names:
            self.assertTrue(n.endswith(':2,'), n)
        self.assertEqual(os.listdir(os.path.join(self.p.maildir('alice'), 'new')), [])
        # A message that arrives later comes after them; theirs stay.
        later = maildir_base(1700000100)
        self.put(new_message(), base=later)
        m = self.poplib()
        _, second, _ = m.uidl()
        self.assertEqual(second, first + [f'4 {later}'.encode()])
        self.assertEqual(m.uidl(2), f'+OK 2 {bases[1]}'.encode())
        m.quit()

    def test_unique_and_rfc1939_form(self):
        self.put(new_message(), base='x' * 100)              # too long for a UIDL
        self.put(new_message(), base='1700000000.M1P1.host', where='cur', flags='S')
        self.put(new_message(), base='1700000000.M1P1.host', sizes='S', where='cur')
        m = self.poplib()
        _, lines, _ = m.uidl()
        uids = [l.split(b' ', 1)[1] for l in lines]
        self.assertEqual(len(uids), 3)
        self.assertEqual(len(set(uids)), 3, uids)
        for u in uids:
            self.assertTrue(1 <= len(u) <= 70, u)
            self.assertTrue(all(0x21 <= c <= 0x7e for c in u), u)
        m.quit()
        m = self.poplib()
        self.assertEqual(m.uidl()[1], lines)
        m.quit()

    def test_order_by_delivery_time(self):
        # M99 before M123 within one second; seconds before all.
        b3 = self.put(b'Subject: 3\n\n', base='1700000001.M5P1.h')
        b1 = self.put(b'Subject: 1\n\n', base='1700000000.M99P1.h')
        b2 = self.put(b'Subject: 2\n\n', base='1700000000.M123P1.h')
        self.assertTrue(b1 and b2 and b3)
        m = self.poplib()
        for n in (1, 2, 3):
            self.assertEqual(m.retr(n)[1][0], f'Subject: {n}'.encode())
        m.quit()


class Deletion(Pop3TestCase):
    def setUp(self):
        super().setUp()
        self.paths = [self.put(new_message(f'm{i}'), base=maildir_base(1700000000 + i))
                      for i in range(3)]

    def files(self):
        return self.p.messages('alice')

    def test_dele_quit_deletes(self):
        c = self.session()
        self.assertEqual(c.cmd('DELE 2'), '+OK message 2 deleted')
        self.assertEqual(len(self.files()), 3)  # nothing happens before QUIT
        r = c.cmd('QUIT')
        self.assertTrue(r.startswith('+OK'), r)
        self.assertIn('2 messages left', r)
        self.assertTrue(c.closed())
        left = self.files()
        self.assertEqual(len(left), 2)
        self.assertFalse([f for f in left if os.path.basename(self.paths[1]).split(',')[0] in f])
        self.assertTrue(self.log_events(event='disconnect', result='quit', deleted=1))

    def test_dele_rset_keeps(self):
        c = self.session()
        self.assertTrue(c.cmd('DELE 1').startswith('+OK'))
        self.assertTrue(c.cmd('DELE 3').startswith('+OK'))
        self.assertTrue(c.cmd('STAT').startswith('+OK 1 '))
        r = c.cmd('RSET')
        self.assertTrue(r.startswith('+OK maildrop has 3 messages'), r)
        self.assertTrue(c.cmd('RETR 1').startswith('+OK'))
        c.multi()
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        self.assertTrue(c.closed())
        self.assertEqual(len(self.files()), 3)

    def test_drop_without_quit_keeps(self):
        c = self.session()
        self.assertTrue(c.cmd('DELE 1').startswith('+OK'))
        self.assertTrue(c.cmd('DELE 2').startswith('+OK'))
        c.close()
        self.assertTrue(self.srv.wait_handlers())
        self.assertEqual(len(self.files()), 3)
        c = self.session()
        self.assertTrue(c.cmd('STAT').startswith('+OK 3 '))

    def test_deleted_message_refused(self):
        c = self.session()
        self.assertTrue(c.cmd('DELE 2').startswith('+OK'))
        self.assertEqual(c.cmd('RETR 2'), '-ERR message deleted')
        self.assertEqual(c.cmd('TOP 2 0'), '-ERR message deleted')
        self.assertEqual(c.cmd('LIST 2'), '-ERR message deleted')
        self.assertEqual(c.cmd('UIDL 2'), '-ERR message deleted')
        self.assertEqual(c.cmd('DELE 2'), '-ERR message deleted')
        stat = c.cmd('STAT')
        self.assertTrue(stat.startswith('+OK 2 '), stat)
        self.assertTrue(c.cmd('LIST').startswith('+OK'))
        self.assertEqual([l.split()[0] for l in c.multi()], [b'1', b'3'])
        self.assertTrue(c.cmd('UIDL').startswith('+OK'))
        self.assertEqual([l.split()[0] for l in c.multi()], [b'1', b'3'])

    def test_message_number_bounds(self):
        c = self.session()
        cases = {
            'RETR 0': '-ERR no such message',
            'RETR 4': '-ERR no such message',
            'RETR 99999999999999999999999': '-ERR no such message',
            'RETR -1': '-ERR invalid message number',
            'RETR +1': '-ERR invalid message number',
            'RETR 1x': '-ERR invalid message number',
            'RETR': '-ERR invalid message number',
            'LIST abc': '-ERR invalid message number',
            'DELE 4': '-ERR no such message',
            'UIDL 0': '-ERR no such message',
        }
        for cmd, want in cases.items():
            self.assertEqual(c.cmd(cmd), want, cmd)
        # The session goes on.
        self.assertTrue(c.cmd('RETR 3').startswith('+OK'))
        c.multi()
        self.assertEqual(c.cmd('NOOP'), '+OK')


class Snapshot(Pop3TestCase):
    def test_odd_names(self):
        md = self.p.maildir('alice')
        self.put(b'Subject: plain\n\nbody\n', base='1700000000.plain', sizes=False)
        self.put(b'Subject: seen\n\nbody\n', base='1700000001.seen', where='cur', flags='S',
                 sizes=False)
        os.makedirs(os.path.join(md, 'cur', 'subdir'))
        with open(os.path.join(md, 'cur', '.hidden'), 'w') as f:
            f.write('not a message')
        with open(os.path.join(md, 'new', '.dotfile'), 'w') as f:
            f.write('not a message')
        with open(os.path.join(md, 'tmp', '1700000002.partial'), 'w') as f:
            f.write('being delivered')
        m = self.poplib()
        self.assertEqual(m.stat()[0], 2)
        self.assertEqual(m.uidl()[1], [b'1 1700000000.plain', b'2 1700000001.seen'])
        m.quit()
        cur = sorted(os.listdir(os.path.join(md, 'cur')))
        self.assertEqual(cur, ['.hidden', '1700000000.plain:2,', '1700000001.seen:2,S', 'subdir'])
        self.assertEqual(os.listdir(os.path.join(md, 'new')), ['.dotfile'])

    def test_renamed_during_session(self):
        # An IMAP server adding a flag renames the file in cur/: RETR and
        # DELE still find it by its base name.
        path = self.put(b'Subject: r\n\nbody\n', base='1700000000.ren', where='cur')
        c = self.session()
        os.rename(path, path + 'S')
        self.assertTrue(c.cmd('RETR 1').startswith('+OK'))
        self.assertEqual(c.multi(), [b'Subject: r', b'', b'body'])
        self.assertTrue(c.cmd('DELE 1').startswith('+OK'))
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        self.assertEqual(self.p.messages('alice'), [])

    def test_vanished_message(self):
        path = self.put(b'Subject: v\n\nbody\n', base='1700000000.van', where='cur')
        c = self.session()
        os.unlink(path)
        self.assertEqual(c.cmd('RETR 1'), '-ERR [SYS/PERM] Message 1 no longer exists')
        self.assertTrue(c.cmd('DELE 1').startswith('+OK'))
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))


class Limits(Pop3TestCase):
    def test_snapshot_capped(self):
        # POP3_MESSAGES_MAX (100000) messages in one session; the rest wait
        # for a later one.
        cur = os.path.join(self.p.maildir('alice'), 'cur')
        for sub in ('cur', 'new', 'tmp'):
            os.makedirs(os.path.join(self.p.maildir('alice'), sub))
        one = os.path.join(self.p.maildir('alice'), 'tmp', 'one')
        for i in range(100003):
            # Hard links are quicker to make than files; a new file every
            # 50000 (ext4 allows 65000 links to one).
            if i % 50000 == 0:
                with open(one, 'wb') as f:
                    f.write(b'\n')
            os.link(one, os.path.join(cur, f'{1600000000 + i}.M1P1.h,S=1,W=2:2,'))
            if i % 50000 == 49999:
                os.unlink(one)
        os.unlink(one)
        c = self.session()
        self.assertEqual(c.cmd('STAT'), '+OK 100000 200000')
        self.assertEqual(c.cmd('LIST 100001'), '-ERR no such message')
        self.assertTrue(c.cmd('LIST 100000').startswith('+OK 100000 2'))
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        self.assertTrue(self.log_events(event='maildrop', result='truncated', messages=100000))


class Commands(Pop3TestCase):
    def test_pipelining(self):
        self.put(new_message('one'))
        self.put(b'Subject: two\n\n.dot\n', sizes=False)
        c = self.connect()
        c.send(f'CAPA\r\nUSER alice\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 2\r\n'
               'TOP 1 0\r\nBOGUS\r\nDELE 1\r\nNOOP\r\nRSET\r\nLIST 2\r\nQUIT\r\n')
        self.assertTrue(c.resp().startswith('+OK'))
        self.assertIn(b'PIPELINING', c.multi())
        self.assertEqual(c.resp(), '+OK Send your password')
        self.assertTrue(c.resp().startswith('+OK Logged in'))
        self.assertTrue(c.resp().startswith('+OK 2 '))
        self.assertTrue(c.resp().startswith('+OK 2 messages'))
        self.assertEqual(len(c.multi()), 2)
        self.assertTrue(c.resp().startswith('+OK'))
        self.assertEqual(len(c.multi()), 2)
        self.assertTrue(c.resp().startswith('+OK'))
        self.assertEqual(c.multi(), [b'Subject: two', b'', b'.dot'])
        self.assertTrue(c.resp().startswith('+OK'))
        self.assertEqual(c.multi()[-1], b'')
        self.assertEqual(c.resp(), '-ERR Unknown command')
        self.assertEqual(c.resp(), '+OK message 1 deleted')
        self.assertEqual(c.resp(), '+OK')
        self.assertTrue(c.resp().startswith('+OK maildrop has 2 messages'))
        self.assertTrue(c.resp().startswith('+OK 2 '))
        self.assertTrue(c.resp().startswith('+OK'))
        self.assertTrue(c.closed())
        self.assertEqual(len(self.p.messages('alice')), 2)

    def test_bad_commands_then_hang_up(self):
        c = self.connect()
        for i in range(19):
            r = c.cmd(f'XYZZY{i}' if i % 2 else 'STAT')
            self.assertTrue(r.startswith('-ERR'), r)
        # Still talking after 19 bad commands.
        self.assertTrue(c.cmd('CAPA').startswith('+OK'))
        c.multi()
        self.assertEqual(c.cmd('NONSENSE'), '-ERR Unknown command')
        self.assertEqual(c.resp(), '-ERR Too many bad commands, closing the connection')
        self.assertTrue(c.closed())
        self.assertTrue(self.log_events(event='disconnect', result='too_many_errors'))

    def test_long_lines(self):
        c = self.connect()
        # 255 octets with CRLF: accepted (RFC 2449 4).
        self.assertEqual(c.cmd('USER ' + 'a' * 248), '+OK Send your password')
        # 256 octets: refused and skipped, the session goes on.
        self.assertEqual(c.cmd('USER ' + 'a' * 249), '-ERR line too long')
        self.assertEqual(c.cmd('PASS x'), '-ERR Send USER first')
        c.send('X' * 100000 + '\r\nCAPA\r\n')
        self.assertEqual(c.resp(), '-ERR line too long')
        self.assertTrue(c.resp().startswith('+OK'))
        c.multi()
        r = c.login()
        self.assertTrue(r.startswith('+OK'), r)

    def test_wrong_state_and_syntax(self):
        c = self.connect()
        self.assertEqual(c.cmd('STAT'), '-ERR STAT is not valid in the AUTHORIZATION state')
        self.assertEqual(c.cmd('PASS x'), '-ERR Send USER first')
        self.assertEqual(c.cmd('USER'), '-ERR Syntax: USER name')
        self.assertTrue(c.cmd('CAPA extra').startswith('-ERR'))
        self.assertEqual(c.cmd('US\x00ER alice'), '-ERR Unknown command')
        self.assertEqual(c.cmd(''), '-ERR Unknown command')
        # Case does not matter for verbs; PASS must follow USER directly.
        self.assertTrue(c.cmd('user alice').startswith('+OK'))
        self.assertTrue(c.cmd('CAPA').startswith('+OK'))
        c.multi()
        self.assertEqual(c.cmd(f'pass {PASSWORD}'), '-ERR Send USER first')
        self.assertTrue(c.cmd('user alice').startswith('+OK'))
        self.assertTrue(c.cmd(f'pass {PASSWORD}').startswith('+OK'))
        self.assertEqual(c.cmd('USER alice'), '-ERR USER is not valid in the TRANSACTION state')
        self.assertEqual(c.cmd('stat'), '+OK 0 0')
        self.assertTrue(c.cmd('NOOP x').startswith('-ERR'))

    def test_pass_right_after_user(self):
        c = self.connect()
        for between in ('BOGUS', 'STAT', 'CAPA'):
            self.assertEqual(c.cmd('USER alice'), '+OK Send your password')
            r = c.cmd(between)
            if r.startswith('+OK'):
                c.multi()
            self.assertEqual(c.cmd(f'PASS {PASSWORD}'), '-ERR Send USER first', between)

    def test_quit_in_authorization(self):
        self.put(new_message())
        c = self.connect()
        self.assertEqual(c.cmd('QUIT'), '+OK mx.test.example POP3 server signing off')
        self.assertTrue(c.closed())
        self.assertEqual(len(self.p.messages('alice')), 1)

    def test_local_peer_on_pipes(self):
        # Under tcpserver-like supervisors (pipes) the peer is local: it
        # works, and no POP-before-SMTP row is written (no address).
        self.put(new_message())
        r = self.p.run(POP3_PROGRAM, input=f'USER alice\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n'
                       .encode())
        out = r.stdout.decode()
        self.assertRegex(out, r'^\+OK mx.test.example POP3 ready\r\n\+OK Send your password\r\n'
                         r'\+OK Logged in, 1 message\r\n\+OK 1 \d+\r\n\+OK ')
        self.assertEqual(r.stderr, b'')
        self.assertEqual(self.p.sql('SELECT count(*) FROM pop_logins')[0][0], 0)


POP3_PROGRAM = 'pop3-handler/pop3-handler'


class Database(Pop3TestCase):
    def test_unknown_user_version(self):
        self.p.sql('PRAGMA user_version = 99')
        c = self.connect(greet=False)
        r = c.resp()
        self.assertTrue(r.startswith('-ERR [SYS/TEMP]'), r)
        self.assertTrue(c.closed())
        self.assertTrue(self.log_events(event='db_open', result='version'))

    def test_database_missing(self):
        import subprocess
        from harness import binary
        r = subprocess.run([binary(POP3_PROGRAM), '--db', os.path.join(self.p.dir, 'nope.db')],
                           input=b'CAPA\r\n', capture_output=True, env=self.p.env(), timeout=30)
        self.assertTrue(r.stdout.startswith(b'-ERR [SYS/TEMP] '), r.stdout)
        self.assertEqual(r.stdout.count(b'\r\n'), 1)

    def test_usage_error(self):
        r = self.p.run(POP3_PROGRAM, ['--bogus'])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, b'')


if __name__ == '__main__':
    main()
