#!/bin/sh
# From one machine to several (README, "Several machines"): copies a
# postage SQLite database's shared tables into PostgreSQL (a database just
# made with schema/postgresql.sql, empty), and its outbound queue into this
# host's file, host.db, whose queue then goes on where it stopped (the
# queue's files stay in spool_dir). Stop postage's sockets and its queue
# timer and path first, so that nothing changes the SQLite file meanwhile.
#
#   schema/from-sqlite.sh /var/lib/postage/postage.db /var/lib/postage/host.db \
#       psql -h 127.0.0.1 -U postage -d postage
#
# Everything after the two files is the psql command that reaches the new
# database. Its part runs in one transaction: it is all copied, or nothing
# (a row PostgreSQL refuses is named in psql's error: two addresses that
# differ only in the case of a non-ASCII letter, say, which SQLite's
# NOCASE tells apart and citext does not). The host file is written only
# after that commit, and only when it has no queue yet.
set -eu

if [ $# -lt 3 ]; then
	echo "usage: $0 SQLITE_DB HOST_DB psql [psql arguments...]" >&2
	exit 2
fi
db=$1 host=$2
shift 2

version=$(sqlite3 "$db" 'PRAGMA user_version')
if [ "$version" != 4 ]; then
	echo "from-sqlite: $db is at version $version: bring it to 4 with schema/migrations/ first" >&2
	exit 1
fi

# Every table the hosts share, parents before children. Left out:
# auth_pending (checks under way, by processes now stopped) and
# tls_ticket_keys (made again on first use).
tables="settings domains mailboxes addresses forwards relay_networks send_as lists
list_members dkim_keys pop_logins list_pending list_bounces auth_failures harvest send_counts"

{
	# printf, not echo: dash's echo reads \c as the end of its output
	printf '%s\n' '\set ON_ERROR_STOP 1' 'BEGIN;'
	for t in $tables; do
		cols=$(sqlite3 "$db" "SELECT group_concat(name, ', ') FROM pragma_table_info('$t')")
		# CSV with NULL as an unquoted \N; sqlite3 quotes every text,
		# so an empty string stays one
		printf '%s\n' "\\copy $t ($cols) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
		sqlite3 -csv -cmd '.nullvalue \\N' "$db" "SELECT $cols FROM $t"
		printf '%s\n' '\.'
	done
	printf '%s\n' 'COMMIT;'
} | "$@" -X -q -v ON_ERROR_STOP=1 -f -

# The queue: into the host file, made here with the queue's tables as
# the SQLite file has them (postage would make it the same way).
if [ -e "$host" ] && [ "$(sqlite3 "$host" "SELECT count(*) FROM sqlite_master WHERE name = 'queue_messages'")" = 1 ]; then
	if [ "$(sqlite3 "$host" 'SELECT count(*) FROM queue_messages')" != 0 ]; then
		echo "from-sqlite: $host already holds a queue: the old one is left in $db" >&2
		exit 1
	fi
else
	{
		echo 'PRAGMA journal_mode = WAL;'
		echo 'BEGIN;'
		sqlite3 "$db" "SELECT sql || ';' FROM sqlite_master WHERE name IN
			('settings', 'queue_messages', 'queue_recipients', 'queue_recipients_due')
			ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, name = 'queue_recipients'"
		echo 'PRAGMA user_version = 4;'
		echo 'COMMIT;'
	} | sqlite3 "$host" >/dev/null
fi
sqlite3 "$host" "ATTACH '$db' AS old;
BEGIN IMMEDIATE;
INSERT INTO queue_messages SELECT * FROM old.queue_messages;
INSERT INTO queue_recipients SELECT * FROM old.queue_recipients;
COMMIT;"
echo "from-sqlite: copied $(echo $tables | wc -w) tables to PostgreSQL and" \
	"$(sqlite3 "$host" 'SELECT count(*) FROM queue_messages') queued messages to $host"
