"""schema/postgresql.sql (issue 25, "one schema in each dialect"): on a
real PostgreSQL 15 it makes the tables several hosts share with the same
names, columns and indexes as schema/schema.sql, at the same version;
and the administrator's rows behave the same in both: the same writes
are refused (plaintext passwords, a '/' in a login, an address without
'@', a second domain differing only in case...), lookups ignore case
where SQLite's COLLATE NOCASE does, and deleting or renaming a mailbox
cascades the same way. The outbound queue is per host: it stays in
SQLite and is not in the PostgreSQL schema."""
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
PG_SCHEMA = os.path.join(SOURCE, 'schema', 'postgresql.sql')
PER_HOST = {'queue_messages', 'queue_recipients'}

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
                self.assertEqual(lite_cols, pg_cols)
                lite_pk = [r[1] for r in sorted(self.lite_rows(f'PRAGMA table_info({t})'),
                                                key=lambda r: int(r[5])) if r[5] != '0']
                pg_pk = [r[0] for r in self.pg_rows(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    f"WHERE i.indrelid = '{t}'::regclass AND i.indisprimary "
                    "ORDER BY array_position(i.indkey, a.attnum)")]
                self.assertEqual(lite_pk, pg_pk)
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


if __name__ == '__main__':
    unittest.main()
