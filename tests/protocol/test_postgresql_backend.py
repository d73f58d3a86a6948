"""postage on PostgreSQL (issue 25, "a database seam"): the handlers and
the queue runner with --db postgresql://..., against a real PostgreSQL 15
the test starts itself (initdb in a temporary folder, a unix socket only,
passwords checked with SCRAM-SHA-256 as in production).

What several hosts share is on PostgreSQL; what each keeps for itself
(the outbound queue, and settings that differ per host) is in its own
SQLite file, --host-db, which postage makes on first use. Two "hosts"
here are two host files and two spool folders beside one PostgreSQL:

- mail for a local user arrives through PostgreSQL's lookups and a POP3
  login fetches it; the login is recorded where the other host sees it;
- POP-before-SMTP opened on host A lets the same IP relay on host B at
  once, and no other IP;
- relayed mail is queued in the host's own file (PostgreSQL has no queue
  table), and that host's queue runner delivers it to a real SMTP server
  on loopback;
- while PostgreSQL is down, every answer is temporary (4xx, -ERR
  [SYS/TEMP]), never a 5xx and never a 250; when it is back, the same
  open session goes on;
- a wrong database password or an unknown URI option is a temporary
  failure with a log line, never a crash;
- MD5 password authentication works too.
"""
import os
import poplib
import smtplib
import socket
import sqlite3
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import Postage  # noqa: E402
from pgserver import PostgreSQL  # noqa: E402
from smtp_base import Raw, new_message, wire  # noqa: E402

SOURCE = os.environ.get('POSTAGE_SOURCE', os.path.dirname(os.path.dirname(HERE)))
PG_SCHEMA = os.path.join(SOURCE, 'schema', 'postgresql.sql')
DB_PASSWORD = 'pg-secret-1'
PASSWORD = 'mailbox-pass-9'


def literal(v):
    if v is None:
        return 'NULL'
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


class PgPostage(Postage):
    """A postage installation whose shared tables are in database `name`
    of a PostgreSQL server; host files host-a.db, host-b.db."""

    counter = 0

    def __init__(self, pg):
        super().__init__()
        self.pg = pg
        PgPostage.counter += 1
        self.dbname = f'postage{PgPostage.counter}'

    def uri(self, password=DB_PASSWORD, user='postage', extra=''):
        return (f'postgresql://{user}:{password}@/{self.dbname}?host={self.pg.sock}{extra}')

    def __enter__(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix='postage-test-')
        os.chmod(self.dir, 0o755)
        self.db = self.uri()
        self.host_db = os.path.join(self.dir, 'host-a.db')
        self.mail_root = os.path.join(self.dir, 'mail')
        self.spool_dir = os.path.join(self.dir, 'spool')
        self.log_file = os.path.join(self.dir, 'postage.log')
        self.san_dir = os.path.join(self.dir, 'sanitizers')
        for d in (self.mail_root, self.spool_dir, self.spool_dir + '-b', self.san_dir):
            os.makedirs(d)
        self.pg.psql(f'CREATE DATABASE {self.dbname}')
        with open(PG_SCHEMA) as f:
            self.pg.psql(f.read(), db=self.dbname)
        self.set('hostname', self.hostname)
        self.set('mail_root', self.mail_root)
        self.set('spool_dir', self.spool_dir)
        return self

    def sql(self, query, *params):
        parts = query.split('?')
        assert len(parts) == len(params) + 1, query
        text = parts[0] + ''.join(literal(v) + rest for v, rest in zip(params, parts[1:]))
        out = self.pg.psql(text + ';', db=self.dbname).stdout
        return [tuple(line.split('|')) for line in out.splitlines() if line]

    def set(self, key, value):
        self.sql('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) '
                 'DO UPDATE SET value = excluded.value', key, None if value is None else str(value))

    def env_items(self):
        return super().env_items() + [('POSTAGE_HOST_DB', self.host_db)]

    def host(self, name):
        return os.path.join(self.dir, f'host-{name}.db')

    def host_rows(self, name, query, *params):
        con = sqlite3.connect(self.host(name), timeout=30)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()


class PostgreSQLBackendTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = PostgreSQL(password=DB_PASSWORD).start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.stop()

    def setUp(self):
        p = self.p = PgPostage(self.pg).enter_for(self)
        p.add_domain('example.test')
        p.add_account('alice', PASSWORD, 'alice@example.test')
        p.add_account('bob', PASSWORD, 'Bob@Example.test')
        # host B: its own queue and spool, and a name of its own
        self.mx_a = p.serve('smtp-handler/smtp-handler', ['--mode=mx'])
        self.pop_a = p.serve('pop3-handler/pop3-handler')
        self.mx_b = p.serve('smtp-handler/smtp-handler', ['--mode=mx', '--host-db', p.host('b')])
        self.addCleanup(p.check_sanitizers)

    def set_host(self, name, key, value):
        """A setting of one host (its file exists once a handler ran)."""
        self.assertTrue(os.path.exists(self.p.host(name)), 'the host file was not made')
        con = sqlite3.connect(self.p.host(name), timeout=30, isolation_level=None)
        try:
            con.execute('INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)', (key, value))
        finally:
            con.close()

    def greet(self, srv, source='127.0.0.1'):
        s = socket.create_connection((srv.host, srv.port), timeout=30,
                                     source_address=(source, 0))
        c = Raw(s)
        return c, c.reply()

    def test_mail_in_and_pop3_out(self):
        p = self.p
        with self.mx_a.smtp() as s:
            s.ehlo('client.example')
            msg = new_message(body='through PostgreSQL\n')
            if isinstance(msg, bytes):
                msg = msg.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')
            # the address is stored as Bob@Example.test: citext finds it
            refused = s.sendmail('s@remote.example', ['alice@example.test', 'BOB@example.TEST'],
                                 msg)
            self.assertEqual(refused, {})
            s.mail('s@remote.example')
            code, text = s.rcpt('nobody@example.test')
            self.assertEqual(code, 550, text)
        self.assertEqual(len(p.messages('alice')), 1)
        self.assertEqual(len(p.messages('bob')), 1)
        m = self.pop_a.pop3('alice', PASSWORD)
        count, _ = m.stat()
        self.assertEqual(count, 1)
        body = b'\n'.join(m.retr(1)[1])
        self.assertIn(b'through PostgreSQL', body)
        m.quit()
        rows = p.sql("SELECT ip, login FROM pop_logins")
        self.assertEqual(rows, [('127.0.0.1', 'alice')])
        # the host file was made, with the queue's tables and no shared one
        tables = {r[0] for r in p.host_rows('a', "SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")}
        self.assertEqual(tables, {'settings', 'queue_messages', 'queue_recipients'})
        self.assertEqual(p.host_rows('a', 'PRAGMA user_version'), [(4,)])
        # a wrong password is refused, and the failure is counted where
        # every host sees it
        with self.assertRaises(poplib.error_proto):
            self.pop_a.pop3('alice', 'wrong')
        rows = p.sql("SELECT failures FROM auth_failures")
        self.assertEqual(rows, [('1',)])

    def test_pop_before_smtp_across_hosts(self):
        p = self.p
        # before any login, 127.0.0.2 may not relay on host B
        c, (code, _) = self.greet(self.mx_b, '127.0.0.2')
        self.assertEqual(code, 220)
        self.assertEqual(c.cmd('EHLO a.example')[0], 250)
        self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)
        code, text = c.cmd('RCPT TO:<far@remote.example>')
        self.assertGreaterEqual(code, 550, text)
        c.cmd('QUIT')
        c.close()
        # a POP3 login on host A from 127.0.0.2
        s = socket.create_connection((self.pop_a.host, self.pop_a.port), timeout=30,
                                     source_address=('127.0.0.2', 0))
        f = s.makefile('rwb')
        self.assertTrue(f.readline().startswith(b'+OK'))
        for line in (b'USER alice\r\n', f'PASS {PASSWORD}\r\n'.encode(), b'QUIT\r\n'):
            f.write(line)
            f.flush()
            reply = f.readline()
            self.assertTrue(reply.startswith(b'+OK'), reply)
        s.close()
        # host B lets 127.0.0.2 relay at once; 127.0.0.3 still not
        for source, allowed in (('127.0.0.2', True), ('127.0.0.3', False)):
            c, (code, _) = self.greet(self.mx_b, source)
            self.assertEqual(code, 220)
            self.assertEqual(c.cmd('EHLO a.example')[0], 250)
            self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)
            code, text = c.cmd('RCPT TO:<far@remote.example>')
            if allowed:
                self.assertEqual(code, 250, text)
            else:
                self.assertGreaterEqual(code, 550, text)
            c.cmd('QUIT')
            c.close()

    def test_relay_queued_on_its_host_and_delivered(self):
        from test_queue import Sink
        p = self.p
        p.add_relay_network('127.0.0.4/32')
        sink = Sink()
        self.addCleanup(sink.stop)
        p.set('relayhost', f'[127.0.0.1]:{sink.port}')
        # host B has its own spool folder and its own name (both host
        # files are made by a first session)
        for srv in (self.mx_a, self.mx_b):
            c, (code, _) = self.greet(srv, '127.0.0.1')
            c.cmd('QUIT')
            c.close()
        self.set_host('b', 'spool_dir', p.spool_dir + '-b')
        self.set_host('b', 'hostname', 'b.mx.example.test')
        c, (code, text) = self.greet(self.mx_b, '127.0.0.4')
        self.assertEqual(code, 220)
        self.assertIn('b.mx.example.test', ' '.join(text))
        self.assertEqual(c.cmd('EHLO a.example')[0], 250)
        self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<far@remote.example>')[0], 250)
        self.assertEqual(c.cmd('DATA')[0], 354)
        c.send(wire(new_message(body='queued on host B\n')))
        code, text = c.reply()
        self.assertEqual(code, 250, text)
        c.cmd('QUIT')
        c.close()
        rows = p.host_rows('b', 'SELECT recipient, state FROM queue_recipients')
        self.assertEqual(rows, [('far@remote.example', 'queued')])
        self.assertEqual(len(os.listdir(os.path.join(p.spool_dir + '-b', 'queue'))), 1)
        self.assertEqual(p.host_rows('a', 'SELECT count(*) FROM queue_recipients'), [(0,)])
        self.assertEqual(os.listdir(os.path.join(p.spool_dir, 'queue'))
                         if os.path.isdir(os.path.join(p.spool_dir, 'queue')) else [], [])
        r = p.run('queue/queue-runner', ['--once', '--host-db', p.host('b')], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(harness.wait_for(lambda: len(sink.handler.messages) == 1, 30),
                        p.log_text()[-3000:])
        got = sink.handler.messages[0]
        self.assertEqual(got['rcpts'], ['far@remote.example'])
        self.assertIn(b'queued on host B', got['content'])
        # done with: its rows and its file are gone from host B
        self.assertEqual(p.host_rows('b', "SELECT count(*) FROM queue_messages"), [(0,)])
        self.assertEqual(os.listdir(os.path.join(p.spool_dir + '-b', 'queue')), [])
        # the queue's tables are not in PostgreSQL at all
        rows = p.sql("SELECT count(*) FROM information_schema.tables "
                     "WHERE table_name LIKE 'queue%'")
        self.assertEqual(rows, [('0',)])

    def test_database_down_means_temporary_errors(self):
        p = self.p
        c = Raw(self.mx_a.connect())
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd('EHLO a.example')[0], 250)
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
        self.pg.halt()
        try:
            code, text = c.cmd('RCPT TO:<alice@example.test>')
            self.assertTrue(400 <= code < 500, f'{code} {text}')
            code, text = c.cmd('RCPT TO:<nobody@example.test>')
            self.assertTrue(400 <= code < 500, f'{code} {text}')
            # a new session: 421, or a 4xx at the first lookup
            c2 = Raw(self.mx_a.connect())
            code, text = c2.reply()
            if code == 220:
                c2.cmd('EHLO a.example')
                c2.cmd('MAIL FROM:<s@remote.example>')
                code, text = c2.cmd('RCPT TO:<alice@example.test>')
            self.assertTrue(400 <= code < 500, f'{code} {text}')
            c2.close()
            # POP3: [SYS/TEMP], not a wrong password
            s = socket.create_connection((self.pop_a.host, self.pop_a.port), timeout=30)
            f = s.makefile('rwb')
            greeting = f.readline()
            if greeting.startswith(b'+OK'):
                f.write(b'USER alice\r\n')
                f.flush()
                f.readline()
                f.write(f'PASS {PASSWORD}\r\n'.encode())
                f.flush()
                reply = f.readline()
            else:
                reply = greeting
            self.assertTrue(reply.startswith(b'-ERR [SYS/TEMP]'), reply)
            s.close()
        finally:
            self.pg.resume()
        # the open session goes on: a new connection to PostgreSQL
        code, text = c.cmd('RCPT TO:<alice@example.test>')
        self.assertEqual(code, 250, text)
        self.assertEqual(c.cmd('DATA')[0], 354)
        c.send(wire(new_message(body='after the restart\n')))
        self.assertEqual(c.reply()[0], 250)
        c.cmd('QUIT')
        c.close()
        self.assertEqual(len(p.messages('alice')), 1)

    def test_bad_credentials_and_options_are_temporary(self):
        p = self.p
        for uri in (p.uri(password='wrong'), p.uri(extra='&sslmode=require'),
                    p.uri(extra='&nonsense=1')):
            r = p.run('smtp-handler/smtp-handler', ['--mode=mx', '--db', uri], input=b'QUIT\r\n')
            out = r.stdout.decode(errors='replace')
            self.assertTrue(out.startswith('421'), out)
            self.assertEqual(r.stderr, b'')
        log = p.log_text()
        self.assertIn('password authentication failed', log)
        self.assertIn('not a postgresql:// URI', log)

    def test_md5_authentication(self):
        p = self.p
        self.pg.psql("SET password_encryption = 'md5'; "
                     "CREATE ROLE mailer LOGIN PASSWORD 'md5-pass'; "
                     f"GRANT ALL ON ALL TABLES IN SCHEMA public TO mailer",
                     db=p.dbname)
        # pg_hba: mailer proves its password with MD5, before the rest
        hba = os.path.join(self.pg.data, 'pg_hba.conf')
        with open(hba) as f:
            text = f.read()
        with open(hba, 'w') as f:
            f.write('local all mailer md5\n' + text)
        self.pg.psql('SELECT pg_reload_conf()')
        uri = p.uri(user='mailer', password='md5-pass')
        r = p.run('smtp-handler/smtp-handler', ['--mode=mx', '--db', uri],
                  input=b'EHLO a.example\r\nMAIL FROM:<s@remote.example>\r\n'
                        b'RCPT TO:<alice@example.test>\r\nQUIT\r\n')
        out = r.stdout.decode(errors='replace')
        lines = [ln for ln in out.split('\r\n') if ln[:3].isdigit() and ln[3:4] == ' ']
        self.assertEqual([ln[:3] for ln in lines], ['220', '250', '250', '250', '221'], out)
        r = p.run('smtp-handler/smtp-handler', ['--mode=mx', '--db', p.uri(user='mailer', password='x')],
                  input=b'QUIT\r\n')
        self.assertTrue(r.stdout.startswith(b'421'), r.stdout)


if __name__ == '__main__':
    harness.main()
