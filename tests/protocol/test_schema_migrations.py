"""schema/migrations/ bring a database made by an older postage to what
schema/schema.sql makes today (DESIGN.md: the schema is an admin
interface; a handler refuses a version it does not know).

tests/fixtures/schema-v1.sql is schema.sql as version 1 shipped it. The
test makes a version 1 database with rows an administrator would have,
applies every migration in order with the sqlite3 command line, as the
README says, and compares every table, index and trigger with a fresh
database: same names, same SQL, same user_version; the rows survive; and
the handler then serves it.
"""
import glob
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

SOURCE = os.environ.get('POSTAGE_SOURCE', os.path.dirname(os.path.dirname(HERE)))
V1 = os.path.join(SOURCE, 'tests', 'fixtures', 'schema-v1.sql')


def sqlite3_cli(db, script):
    r = subprocess.run(['sqlite3', '-bail', db], input=script.encode(), capture_output=True)
    if r.returncode != 0:
        raise AssertionError(f'sqlite3 {db} failed: {r.stderr.decode(errors="replace")}')


def objects(db):
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                           "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name").fetchall()
        version = con.execute('PRAGMA user_version').fetchone()[0]
    finally:
        con.close()
    norm = [(t, n, tb, re.sub(r'\s+', ' ', s or '').strip()) for t, n, tb, s in rows]
    return norm, version


class Migrations(unittest.TestCase):

    def test_every_migration_in_order_gives_todays_schema(self):
        if not os.path.exists('/usr/bin/sqlite3'):
            self.skipTest('sqlite3 is not installed (package sqlite3)')
        with tempfile.TemporaryDirectory() as d:
            fresh = os.path.join(d, 'fresh.db')
            old = os.path.join(d, 'old.db')
            with open(os.path.join(SOURCE, 'schema', 'schema.sql')) as f:
                sqlite3_cli(fresh, f.read())
            with open(V1) as f:
                sqlite3_cli(old, f.read())
            sqlite3_cli(old, """
                INSERT INTO domains VALUES ('example.org');
                INSERT INTO mailboxes (login, password) VALUES ('alice', '$6$salt$hash');
                INSERT INTO addresses VALUES ('alice@example.org', 'alice');
                INSERT INTO forwards VALUES ('info@example.org', 'alice@example.org');
                INSERT INTO settings VALUES ('hostname', 'mx.example.org');
            """)
            self.assertEqual(objects(old)[1], 1)
            migrations = sorted(glob.glob(os.path.join(SOURCE, 'schema', 'migrations', '*.sql')))
            self.assertTrue(migrations, 'no migrations')
            for m in migrations:
                number = int(os.path.basename(m)[:4])
                before = objects(old)[1]
                if number <= before:
                    continue
                self.assertEqual(number, before + 1, f'{m} does not follow version {before}')
                with open(m) as f:
                    sqlite3_cli(old, f.read())
                self.assertEqual(objects(old)[1], number, f'{m} did not set user_version')
            want, want_version = objects(fresh)
            got, got_version = objects(old)
            self.assertEqual(got_version, want_version)
            self.assertEqual(got, want)
            con = sqlite3.connect(old)
            try:
                self.assertEqual(con.execute('SELECT mailbox FROM addresses').fetchall(), [('alice',)])
            finally:
                con.close()
            # And a handler serves it.
            r = subprocess.run([harness.binary('smtp-handler/smtp-handler'), '--db', old],
                               input=b'QUIT\r\n', capture_output=True, timeout=30,
                               env=dict(os.environ, POSTAGE_LOG_FILE=os.path.join(d, 'log')))
            self.assertTrue(r.stdout.startswith(b'220 mx.example.org'), r.stdout)


if __name__ == '__main__':
    harness.main()
