"""schema/postgresql.sql and shared/sql-postgresql.h (issue 25, "one
schema in each dialect", and the statement list's second dialect): on a
real PostgreSQL 15 it makes the tables several hosts share with the same
names, columns and indexes as schema/schema.sql, at the same version;
and the administrator's rows behave the same in both: the same writes
are refused (plaintext passwords, a '/' in a login, an address without
'@', a second domain differing only in case...), lookups ignore case
where SQLite's COLLATE NOCASE does, and deleting or renaming a mailbox
cascades the same way. The outbound queue is per host: it stays in
SQLite and is not in the PostgreSQL schema. Every statement of
shared/sql.h but the queue's has a twin in shared/sql-postgresql.h with
the same parameters, each prepares on PostgreSQL, and a run of them with
the same values gives the same rows from both engines."""
import os
import re
import sqlite3
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402,F401
from pgserver import PostgreSQL  # noqa: E402

SOURCE = os.environ.get('POSTAGE_SOURCE', os.path.dirname(os.path.dirname(HERE)))
SQLITE_SCHEMA = os.path.join(SOURCE, 'schema', 'schema.sql')
SQLITE_LIST = os.path.join(SOURCE, 'shared', 'sql.h')
PG_LIST = os.path.join(SOURCE, 'shared', 'sql-postgresql.h')
PG_SCHEMA = os.path.join(SOURCE, 'schema', 'postgresql.sql')
PER_HOST = {'queue_messages', 'queue_recipients'}
# PostgreSQL's column standing for SQLite's rowid, where a statement names it.
ROWID = {'auth_pending': 'id'}

HASH = '$6$salt$' + 'x' * 86

# (what it is, SQL, whether both engines accept it), run in order on a
# database holding one mailbox 'alice' with alice@example.org.
WRITES = [
    ('a second domain in another case', "INSERT INTO domains VALUES ('EXAMPLE.org')", False),
    ('a domain with @', "INSERT INTO domains VALUES ('a@b')", False),
    ('a new domain', "INSERT INTO domains VALUES ('other.example')", True),
    ('a plaintext password',
     "INSERT INTO mailboxes (login, password) VALUES ('bob', 'secret')", False),
    ('a login with /', f"INSERT INTO mailboxes (login, password) VALUES ('a/b', '{HASH}')", False),
    ('a login starting with a dot',
     f"INSERT INTO mailboxes (login, password) VALUES ('.x', '{HASH}')", False),
    ('a login of 65 characters',
     f"INSERT INTO mailboxes (login, password) VALUES ('{'l' * 65}', '{HASH}')", False),
    ('a yescrypt hash', "INSERT INTO mailboxes (login, password) VALUES ('bob', '$y$j9T$a$b')",
     True),
    ('a negative quota', "UPDATE mailboxes SET quota_bytes = -1 WHERE login = 'bob'", False),
    ('an address without @', "INSERT INTO addresses VALUES ('bob', 'bob')", False),
    ('an address of no mailbox', "INSERT INTO addresses VALUES ('x@example.org', 'nobody')",
     False),
    ('the same address in another case',
     "INSERT INTO addresses VALUES ('ALICE@Example.ORG', 'bob')", False),
    ('a catch-all', "INSERT INTO addresses VALUES ('@other.example', 'bob')", True),
    ('a forward target without a local part',
     "INSERT INTO forwards VALUES ('f@example.org', '@remote.example')", False),
    ('a list address with +',
     "INSERT INTO lists (address, owner) VALUES ('a+b@example.org', 'o@example.org')", False),
    ('an unknown posting mode',
     "INSERT INTO lists (address, owner, posting) VALUES ('l@example.org', 'o@example.org', 'x')",
     False),
    ('a list archived by bob',
     "INSERT INTO lists (address, owner, archive) VALUES ('team@example.org', 'o@example.org', "
     "'bob')", True),
    ('a member of no list', "INSERT INTO list_members (list, address) VALUES ('no@example.org', "
     "'m@remote.example')", False),
    ('a member, the list named in another case',
     "INSERT INTO list_members (list, address) VALUES ('TEAM@example.org', 'm@remote.example')",
     True),
    ('an unknown DKIM algorithm',
     "INSERT INTO dkim_keys (domain, selector, algorithm, private_key_path) "
     "VALUES ('example.org', 's', 'rsa-sha1', '/k')", False),
    ('a send_as grant', "INSERT INTO send_as (login, address) VALUES ('bob', '@example.org')",
     True),
    ('an unknown list action', "INSERT INTO list_pending VALUES ('h', 'team@example.org', "
     "'m@remote.example', 'join', NULL, 1, 2)", False),
]

# Lookups whose answer must be the same in both engines, after WRITES.
READS = [
    "SELECT mailbox FROM addresses WHERE address = 'ALICE@EXAMPLE.ORG'",
    "SELECT count(*) FROM domains WHERE name = 'Other.Example'",
    "SELECT count(*) FROM addresses WHERE address LIKE '%@OTHER.example'",
    "SELECT list FROM list_members WHERE address = 'M@remote.example'",
]

# Cascades: each runs, then the check's answer must agree.
CASCADES = [
    ("UPDATE mailboxes SET login = 'robert' WHERE login = 'bob'",
     "SELECT mailbox FROM addresses WHERE address = '@other.example'"),
    ("UPDATE mailboxes SET login = 'robert' WHERE login = 'bob'",
     "SELECT archive FROM lists WHERE address = 'team@example.org'"),
    ("DELETE FROM mailboxes WHERE login = 'robert'",
     "SELECT count(*) FROM addresses WHERE mailbox = 'robert'"),
    ("DELETE FROM mailboxes WHERE login = 'robert'",
     "SELECT coalesce(archive, 'null') FROM lists WHERE address = 'team@example.org'"),
    ("DELETE FROM mailboxes WHERE login = 'robert'", "SELECT count(*) FROM send_as"),
    ("DELETE FROM lists WHERE address = 'Team@Example.org'", "SELECT count(*) FROM list_members"),
]

SETUP = ("INSERT INTO domains VALUES ('example.org');"
         f"INSERT INTO mailboxes (login, password) VALUES ('alice', '{HASH}');"
         "INSERT INTO addresses VALUES ('alice@example.org', 'alice');")


STATEMENT = re.compile(r'^SQL\((SQL_\w+),\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)', re.M)


def statements(path):
    """{name: text} of an X-macro statement list."""
    with open(path) as f:
        src = f.read()
    return {m.group(1): ''.join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2)))
            for m in STATEMENT.finditer(src)}


def highest_param(text, mark):
    return max([int(n) for n in re.findall(re.escape(mark) + r'(\d+)', text)] or [0])


# Run in order on both engines, each a statement and its parameters; the
# rows must agree (sorted where the statement has no ORDER BY).
RUNS_SETUP = ("INSERT INTO domains VALUES ('example.org'), ('other.example');"
              f"INSERT INTO mailboxes (login, password) VALUES ('alice', '{HASH}');"
              "INSERT INTO addresses VALUES ('alice@example.org', 'alice');"
              "INSERT INTO forwards VALUES ('fw@example.org', 'a@remote.example'), "
              "('fw@example.org', 'b@remote.example');"
              "INSERT INTO send_as VALUES ('alice', '@other.example');"
              "INSERT INTO lists (address, owner) VALUES ('team@example.org', 'o@example.org');"
              "INSERT INTO list_members (list, address) VALUES "
              "('team@example.org', 'a@remote.example'), ('team@example.org', 'b@other.example');"
              "INSERT INTO dkim_keys (domain, selector, algorithm, private_key_path) VALUES "
              "('example.org', 'ed', 'ed25519-sha256', '/k/ed'), "
              "('example.org', 'rsa', 'rsa-sha256', '/k/rsa');")
RUNS = [
    ('SQL_DOMAIN_IS_LOCAL', ('EXAMPLE.ORG',)),
    ('SQL_DOMAIN_IS_LOCAL', ('nowhere.example',)),
    ('SQL_DOMAIN_NAMES', (10,)),
    ('SQL_ADDRESS_MAILBOX', ('Alice@Example.org',)),
    ('SQL_FORWARD_TARGETS', ('FW@example.org', 10)),
    ('SQL_MAILBOX_PASSWORD', ('alice',)),
    ('SQL_SEND_AS', ('alice', 'x@other.example', '@other.example')),
    ('SQL_SEND_AS', ('alice', 'x@example.org', '@example.org')),
    ('SQL_AUTH_SLOT_TAKE', ('192.0.2.1', 1000, 2, 900, 940)),
    ('SQL_AUTH_SLOT_TAKE', ('192.0.2.1', 1001, 2, 900, 940)),
    ('SQL_AUTH_SLOT_TAKE', ('192.0.2.1', 1002, 2, 900, 940)),
    ('SQL_AUTH_SLOT_RELEASE', (1,)),
    ('SQL_AUTH_SLOT_TAKE', ('192.0.2.1', 1003, 2, 900, 940)),
    ('SQL_AUTH_FAILURE_RECORD', ('192.0.2.1', 1000, 500)),
    ('SQL_AUTH_FAILURE_RECORD', ('192.0.2.1', 1010, 500)),
    ('SQL_AUTH_FAILURES', ('192.0.2.1', 0)),
    ('SQL_AUTH_FAILURE_RECORD', ('192.0.2.1', 3000, 2000)),
    ('SQL_AUTH_FAILURES', ('192.0.2.1', 0)),
    ('SQL_AUTH_PENDING_PRUNE', (1002,)),
    ('SQL_AUTH_SLOT_TAKE', ('192.0.2.1', 1004, 9, 0, 0)),
    ('SQL_HARVEST_COUNT', ('192.0.2.9', 100, 50)),
    ('SQL_HARVEST_COUNT', ('192.0.2.9', 101, 50)),
    ('SQL_HARVEST_COUNT', ('192.0.2.9', 900, 800)),
    ('SQL_HARVEST_REFUSALS', ('192.0.2.9', 0)),
    ('SQL_SEND_COUNT_ADD', ('alice', 5, 3)),
    ('SQL_SEND_COUNT_ADD', ('alice', 5, 4)),
    ('SQL_SEND_COUNT', ('alice', 5)),
    ('SQL_SEND_COUNTS_PRUNE', (6,)),
    ('SQL_SEND_COUNT', ('alice', 5)),
    ('SQL_POP_LOGIN_RECORD', ('198.51.100.7', 'alice', 100)),
    ('SQL_POP_LOGIN_RECORD', ('198.51.100.7', 'bob', 200)),
    ('SQL_POP_LOGIN_RECENT', ('198.51.100.7', 150)),
    ('SQL_POP_LOGIN_RECENT', ('198.51.100.7', 250)),
    ('SQL_SRS_SECRET_INSERT', ('first',)),
    ('SQL_SRS_SECRET_INSERT', ('second',)),
    ('SQL_SRS_SECRET_SELECT', ()),
    ('SQL_DKIM_KEYS', ('EXAMPLE.org', 4)),
    ('SQL_DKIM_KEYS', ('example.org', 1)),
    ('SQL_LIST_LOOKUP', ('team@example.org', 'x@example.org')),
    ('SQL_LIST_LOOKUP', ('nolist@example.org', 'TEAM@example.org')),
    ('SQL_LIST_MEMBERS', ('team@example.org', 10)),
    ('SQL_LIST_MEMBER_COUNT', ('team@example.org',)),
    ('SQL_LIST_MEMBER_JOIN', ('team@example.org', 'C@remote.example')),
    ('SQL_LIST_MEMBER_DISABLE', ('team@example.org', 'a@remote.example')),
    ('SQL_LIST_MEMBER_ENABLED', ('team@example.org', 'A@remote.example')),
    ('SQL_LIST_MEMBER_JOIN', ('team@example.org', 'a@remote.example')),
    ('SQL_LIST_MEMBER_ENABLED', ('team@example.org', 'a@remote.example')),
    ('SQL_LIST_IS_MEMBER', ('team@example.org', 'c@REMOTE.example')),
    ('SQL_LIST_MEMBER_DELETE', ('team@example.org', 'c@remote.example')),
    ('SQL_LIST_MEMBER_COUNT', ('team@example.org',)),
    ('SQL_LIST_BOUNCE_ADD', ('team@example.org', 'a@remote.example', 100)),
    ('SQL_LIST_BOUNCE_ADD', ('team@example.org', 'a@remote.example', 200)),
    ('SQL_LIST_BOUNCES_RECENT', ('team@example.org', 'A@remote.example', 150)),
    ('SQL_LIST_BOUNCES_EXPIRE', (100,)),
    ('SQL_LIST_BOUNCES_RECENT', ('team@example.org', 'a@remote.example', 0)),
    ('SQL_LIST_BOUNCES_CLEAR', ('team@example.org', 'a@remote.example')),
    ('SQL_LIST_BOUNCES_RECENT', ('team@example.org', 'a@remote.example', 0)),
    ('SQL_LIST_PENDING_ADD', ('h1', 'team@example.org', 'x@remote.example', 'subscribe', None,
                              10, 500)),
    ('SQL_LIST_PENDING_ADD', ('h2', 'team@example.org', 'y@remote.example', 'post', 'held-2',
                              10, 50)),
    ('SQL_LIST_PENDING_COUNT', ('team@example.org', 'X@remote.example', 'subscribe', 20)),
    ('SQL_LIST_PENDING_HELD_EXPIRED', (60, 10)),
    ('SQL_LIST_PENDING_HOLDS', ('held-2',)),
    ('SQL_LIST_PENDING_FIND', ('h1', 'TEAM@example.org', 20)),
    ('SQL_LIST_PENDING_TAKE', ('h1', 'team@example.org', 20)),
    ('SQL_LIST_PENDING_TAKE', ('h1', 'team@example.org', 20)),
    ('SQL_LIST_PENDING_EXPIRE', (60,)),
    ('SQL_LIST_PENDING_HOLDS', ('held-2',)),
    ('SQL_SETTINGS_LOAD', ()),
]


def sql_literal(v):
    if v is None:
        return 'NULL'
    if isinstance(v, int):
        return str(v)
    return "'" + v.replace("'", "''") + "'"


class Schema(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = PostgreSQL().start()
        cls.pg.psql('CREATE DATABASE postage')
        with open(PG_SCHEMA) as f:
            cls.pg.psql(f.read(), db='postage')
        cls.tmp = tempfile.mkdtemp(prefix='postage-pgschema-')
        cls.lite = sqlite3.connect(os.path.join(cls.tmp, 'postage.db'), isolation_level=None)
        with open(SQLITE_SCHEMA) as f:
            cls.lite.executescript(f.read())
        cls.lite.execute('PRAGMA foreign_keys = ON')

    @classmethod
    def tearDownClass(cls):
        cls.lite.close()
        cls.pg.stop()

    def pg_rows(self, sql):
        out = self.pg.psql(sql, db='postage').stdout
        return [tuple(line.split('|')) for line in out.splitlines() if line]

    def lite_rows(self, sql):
        return [tuple('' if v is None else str(v) for v in row)
                for row in self.lite.execute(sql).fetchall()]

    def test_1_same_tables_columns_indexes_and_version(self):
        lite_tables = {r[0] for r in self.lite_rows(
            "SELECT name FROM sqlite_master WHERE type = 'table'")} - PER_HOST
        pg_tables = {r[0] for r in self.pg_rows(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public'")} - {'postage_schema'}
        self.assertEqual(lite_tables, pg_tables)
        self.assertTrue(PER_HOST.isdisjoint(pg_tables))
        for t in sorted(lite_tables):
            with self.subTest(table=t):
                lite_cols = [r[1] for r in self.lite_rows(f'PRAGMA table_info({t})')]
                pg_cols = [r[0] for r in self.pg_rows(
                    "SELECT column_name FROM information_schema.columns "
                    f"WHERE table_schema = 'public' AND table_name = '{t}' "
                    "ORDER BY ordinal_position")]
                self.assertEqual(lite_cols, [c for c in pg_cols if c != ROWID.get(t)])
                lite_pk = [r[1] for r in sorted(self.lite_rows(f'PRAGMA table_info({t})'),
                                                key=lambda r: int(r[5])) if r[5] != '0']
                pg_pk = [r[0] for r in self.pg_rows(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    f"WHERE i.indrelid = '{t}'::regclass AND i.indisprimary "
                    "ORDER BY array_position(i.indkey, a.attnum)")]
                self.assertEqual(lite_pk or ([ROWID[t]] if t in ROWID else []), pg_pk)
        lite_idx = {r[0] for r in self.lite_rows(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
        lite_idx = {i for i in lite_idx if not i.startswith('queue_')}
        pg_idx = {r[0] for r in self.pg_rows(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND indexname NOT LIKE '%_pkey'")}
        self.assertEqual(lite_idx, pg_idx)
        version = self.lite_rows('PRAGMA user_version')[0][0]
        self.assertEqual(self.pg_rows('SELECT version FROM postage_schema'), [(version,)])
        with open(PG_SCHEMA) as f:
            m = re.search(r'schema version (\d+)', f.read())
        self.assertEqual(m.group(1), version)

    def pg_try(self, sql):
        return self.pg.psql(sql, db='postage', check=False).returncode == 0

    def lite_try(self, sql):
        try:
            self.lite.execute(sql)
            return True
        except sqlite3.Error:
            return False

    def test_2_same_rows_accepted_and_refused_and_the_same_answers(self):
        self.pg.psql(SETUP, db='postage')
        self.lite.executescript(SETUP)
        for what, sql, ok in WRITES:
            with self.subTest(what):
                self.assertEqual(self.lite_try(sql), ok, 'SQLite')
                self.assertEqual(self.pg_try(sql), ok, 'PostgreSQL')
        for sql in READS:
            with self.subTest(sql):
                lite = self.lite_rows(sql)
                self.assertTrue(lite and lite[0][0] not in ('', '0'), lite)
                self.assertEqual(self.pg_rows(sql), lite)
        for change, check in CASCADES:
            with self.subTest(change=change, check=check):
                self.lite_try(change)
                self.pg_try(change)
                self.assertEqual(self.pg_rows(check), self.lite_rows(check))


    def test_3_every_statement_has_a_twin_that_prepares(self):
        lite, pg = statements(SQLITE_LIST), statements(PG_LIST)
        self.assertGreater(len(lite), 50)
        self.assertEqual(set(pg), {k for k in lite if not k.startswith('SQL_QUEUE_')})
        script = []
        for name, text in sorted(pg.items()):
            with self.subTest(name):
                self.assertEqual(highest_param(text, '$'), highest_param(lite[name], '?'))
                self.assertNotIn('?', text.replace("'?'", ''))
            if text.split()[0] in ('BEGIN', 'COMMIT', 'ROLLBACK', 'SET'):
                continue
            script.append(f'PREPARE p AS {text};\nDEALLOCATE p;')
        # One script, stopping at the first statement that does not prepare.
        r = self.pg.psql('\n'.join(script), db='postage', check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.pg.psql('BEGIN; ' + pg['SQL_SYNCHRONOUS_NORMAL'] + '; '
                         + pg['SQL_SYNCHRONOUS_FULL'] + '; COMMIT;', db='postage', check=False)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_4_the_same_statements_give_the_same_rows(self):
        lite_list, pg_list = statements(SQLITE_LIST), statements(PG_LIST)
        self.pg.psql('CREATE DATABASE runs')
        with open(PG_SCHEMA) as f:
            self.pg.psql(f.read(), db='runs')
        self.pg.psql(RUNS_SETUP, db='runs')
        con = sqlite3.connect(os.path.join(self.tmp, 'runs.db'), isolation_level=None)
        with open(SQLITE_SCHEMA) as f:
            con.executescript(f.read())
        con.executescript(RUNS_SETUP)
        nonempty = 0
        for i, (name, params) in enumerate(RUNS):
            with self.subTest(step=i, statement=name, params=params):
                lite = [tuple('' if v is None else str(v) for v in row)
                        for row in con.execute(lite_list[name], params).fetchall()]
                args = '(' + ', '.join(sql_literal(p) for p in params) + ')' if params else ''
                out = self.pg.psql(f'PREPARE p AS {pg_list[name]};\nEXECUTE p{args};\n'
                                   'DEALLOCATE p;', db='runs').stdout
                pg = [tuple(line.split('|')) for line in out.splitlines() if line]
                if 'ORDER BY' not in lite_list[name]:
                    lite, pg = sorted(lite), sorted(pg)
                self.assertEqual(pg, lite)
                nonempty += bool(lite)
        con.close()
        self.assertGreater(nonempty, 30)


if __name__ == '__main__':
    unittest.main()
