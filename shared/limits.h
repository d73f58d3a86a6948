/* Every bound postage enforces, in one place, with the RFC that sets it. */
#ifndef POSTAGE_LIMITS_H
#define POSTAGE_LIMITS_H

/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets with CRLF. */
#define SMTP_COMMAND_LINE_MAX 512
/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. */
#define SMTP_REPLY_LINE_MAX 512
/* RFC 5321 4.5.3.1.6: a text line is 1000 octets; we accept longer lines in
 * DATA (stored faithfully), read in chunks of this size. */
#define SMTP_DATA_CHUNK_MAX 4096
/* RFC 5321 4.5.3.1.8: at least 100 recipients must be accepted. */
#define SMTP_RECIPIENTS_MAX 100
/* Error replies (4xx, 5xx) in a session without a message accepted in
 * between, as Postfix's smtpd_soft_error_limit, smtpd_hard_error_limit and
 * smtpd_error_sleep_time: past the first, every reply waits; at the second
 * the session ends with 421. */
#define SMTP_ERRORS_SOFT 10
#define SMTP_ERRORS_HARD 20
#define SMTP_ERROR_DELAY_MS 1000
/* Address harvesting (DESIGN.md): the setting harvest_limit counts the
 * unknown-recipient refusals of one client address over this window. */
#define HARVEST_WINDOW_SECONDS (15 * 60)
/* NOOP, RSET, VRFY, EXPN, HELP without a message accepted in between,
 * before we hang up (Postfix's smtpd_junk_command_limit): a client cannot
 * hold a connection slot open with idle chatter. */
#define SMTP_JUNK_COMMANDS_MAX 100
/* RFC 5321 4.5.3.2.7: server timeout waiting for a command, 5 minutes. */
#define SMTP_COMMAND_TIMEOUT_MS (5 * 60 * 1000)
/* RFC 5321 4.5.3.2.5/6: data block and termination, 3 and 10 minutes. */
#define SMTP_DATA_TIMEOUT_MS (3 * 60 * 1000)
/* RFC 5321 6.3: more Received headers than this is a mail loop. */
#define SMTP_RECEIVED_MAX 100
/* Forward expansion: depth and total destinations of one RCPT. */
#define FORWARD_DEPTH_MAX 8
#define FORWARD_TARGETS_MAX 100
/* RFC 5321 4.5.1: a <postmaster> without a domain that the hostname's
 * domain does not take goes to the first hosted domain (by name) that
 * has one; this many are tried. */
#define POSTMASTER_DOMAINS_MAX 50
/* Destinations one message may fan out to (recipients x forwards). */
#define MESSAGE_DESTINATIONS_MAX 1000
/* RFC 5321 4.5.3.1.1-3: local part 64, domain 255, path 256 octets. */
#define ADDRESS_LOCAL_MAX 64
#define ADDRESS_DOMAIN_MAX 255
#define ADDRESS_PATH_MAX 256
/* RFC 5321 4.1.1.1: the EHLO argument is a domain or address literal. */
#define SMTP_HELO_MAX 255
/* Failed AUTH attempts in one SMTP session before we hang up. */
#define SMTP_AUTH_FAILURES_MAX 3
/* RFC 4954 4: a SASL exchange line may be up to 12288 octets. */
#define SMTP_AUTH_LINE_MAX 12288

/* RFC 2449 4: a POP3 command line is at most 255 octets with CRLF. */
#define POP3_COMMAND_LINE_MAX 255
/* RFC 2449 4: a response line is at most 512 octets with CRLF. */
#define POP3_REPLY_LINE_MAX 512
/* RFC 1939 3: the autologout timer is at least 10 minutes. */
#define POP3_IDLE_TIMEOUT_MS (10 * 60 * 1000)
#define POP3_BAD_COMMANDS_MAX 20
#define POP3_AUTH_FAILURES_MAX 3
/* RFC 5034 4: a SASL response line is not held to the 255 octets of a
 * command line. */
#define POP3_AUTH_LINE_MAX 12288
/* Messages in one POP3 snapshot: a bound on the session's memory. */
#define POP3_MESSAGES_MAX 100000
/* RFC 1939 7: a unique-id is 1 to 70 characters from 0x21 to 0x7E. */
#define POP3_UID_MAX 70
/* A file name in a directory (NAME_MAX on Linux). */
#define MAILDROP_NAME_MAX 255
/* Largest TOP line count we take literally. */
#define TOP_LINES_MAX 0x7fffffffUL

/* Failed logins per IP (DESIGN.md): delay after 5, refuse at 20, 15 min. */
#define THROTTLE_WINDOW_SECONDS (15 * 60)
/* A password check holds its throttle slot (auth_pending) for a few
 * milliseconds; a slot older than this is of a process that died. */
#define THROTTLE_PENDING_SECONDS 60
#define THROTTLE_DELAY_AFTER 5
#define THROTTLE_REFUSE_AT 20
#define THROTTLE_DELAY_MAX_SECONDS 16
/* auth_failure_delay_ms is capped here: a typo in the setting must not
 * hold every failed login for minutes. */
#define AUTH_FAILURE_DELAY_MAX_MS 10000

/* A line that has taken this long makes its session slow (stress.h);
 * under load a slow session gives up at the next such interval. Once
 * some bytes of the line came, the rest must follow within
 * STRESS_PARTIAL_MS (a client sends a line in one go; a slowloris
 * trickles it). */
#define STRESS_SLOW_MS (10 * 1000)
#define STRESS_PARTIAL_MS (2 * 1000)
/* Bytes of the slow-session lock file: at most this many counted. */
#define STRESS_SLOTS 4096

/* A message being received stays in memory up to this size, then moves
 * to a file in the spool (spool.h): 20 sessions hold at most 20 MiB. */
#define STAGING_MEMORY_MAX (1024 * 1024)

/* SQLite busy timeout: an administrator's open transaction gets this long,
 * then the client gets a 4xx. */
#define DB_BUSY_TIMEOUT_MS 5000
/* WAL pages before a commit checkpoints (SQLite's default is 1000). */
#define DB_WAL_AUTOCHECKPOINT_PAGES 32

/* PostgreSQL (pgwire.c): a statement's whole round trip, and the connect
 * unless the URI's connect_timeout says otherwise. Longer than Patroni's
 * failover (ttl 30 s by default) would keep an SMTP client waiting past
 * what it tolerates for a RCPT (RFC 5321 4.5.3.2: 5 minutes) only if a
 * session met many; pgbouncer queues a client while no primary is there,
 * so the bound is what turns a failover into a 4xx. */
#define PGWIRE_TIMEOUT_MS (20 * 1000)
/* One backend message, and one statement's rows in all (values and
 * cells). The largest row postage reads is a settings value or a list
 * member; a list's members come LIST_MEMBERS_MAX at a time. */
#define PGWIRE_MESSAGE_MAX (1024 * 1024)
#define PGWIRE_RESULT_MAX (16 * 1024 * 1024)
/* SCRAM-SHA-256 iterations a server may ask for (PostgreSQL's default is
 * 4096): a bound on what a wrong server can make a handler compute. */
#define PGWIRE_SCRAM_ITERATIONS_MAX 100000
/* Parameters of one statement (sql-postgresql.h has at most 7). */
#define PGWIRE_PARAMS_MAX 8

/* TLS handshake bound, then hang up. */
#define TLS_HANDSHAKE_TIMEOUT_MS (60 * 1000)
/* Renegotiations (TLS 1.2) a session survives, each refused with a
 * no_renegotiation warning (RFC 5246 7.2.2); the next ends it: a peer told
 * no that asks again (gnutls-cli --rehandshake retries at once) is not
 * going to use the session. */
#define TLS_RENEGOTIATIONS_REFUSED_MAX 1

/* After the last reply, how long and how much we read (and drop) of what
 * the client still sends before closing, so unread input does not turn
 * the close into a reset that destroys the last reply (lingering close). */
#define LINGER_CLOSE_MS 1000
#define LINGER_CLOSE_BYTES_MAX 65536

/* maildir(5): a file in tmp/ untouched for 36 hours is left over from a
 * delivery that died, and may be removed. */
#define MAILDIR_TMP_STALE_SECONDS (36 * 3600)
/* Maildir++ folders (.Sent/, .Trash/, ...) a quota check reads: it runs
 * at RCPT, so a Maildir with more is not read further (the rest go
 * uncounted) rather than holding up the session. */
#define MAILDIR_FOLDERS_MAX 1000

/* Staging files in spool_dir/tmp: the ones a process remembers to remove
 * when it is told to stop (a message, its Date/Message-ID copy, a bounce
 * being written), and how old an unlocked one must be before the queue
 * runner sweeps it (the lock is taken right after the file is made). */
#define SPOOL_STAGING_LIVE_MAX 4
#define SPOOL_STAGING_SWEEP_SECONDS 60

/* Dovecot's dovecot-uidlist (shared/uidlist.c), read when
 * pop3_uidl_format is set. A line is a file name (NAME_MAX) and the
 * extension fields Dovecot writes (sizes, a GUID, a saved POP3 UIDL); a
 * longer one is a broken file. */
#define UIDLIST_LINE_MAX 4096
/* The whole file: expunged records stay in it until Dovecot compacts it
 * (at a quarter of dead lines), so it may list twice POP3_MESSAGES_MAX
 * messages and more; a larger one is not read. */
#define UIDLIST_BYTES_MAX (64 * 1024 * 1024)
/* A POP3 login waits this long for Dovecot's dovecot-uidlist.lock (Dovecot
 * holds it for milliseconds, or touches it through a long sync). */
#define UIDLIST_LOCK_WAIT_MS 5000
/* Dovecot's MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT: a lock untouched this long
 * is stale and may be replaced. */
#define UIDLIST_LOCK_STALE_SECONDS 120
/* Dovecot's STALE_PID_CHECK_SECS: a lock this old whose process (named
 * in it, on this host) is gone is stale. */
#define UIDLIST_LOCK_PID_CHECK_SECONDS 2
/* pop3_uidl_format, and a UIDL made from it: Dovecot sends what it makes,
 * even past RFC 1939's 70 characters (%f of a long file name), so we do;
 * the line "<n> <uidl>" still fits POP3_REPLY_LINE_MAX. */
#define UIDL_FORMAT_MAX 255
#define POP3_UIDL_DOVECOT_MAX 255
/* A value after its modifiers: a uint32 in decimal, a file name, a GUID
 * (at most UIDLIST_LINE_MAX octets). */
#define UIDL_VALUE_MAX (UIDLIST_LINE_MAX + 32)

/* Log lines (log.c): one line as sent, and the key=value fields of it
 * that also go to the journal as structured fields. */
#define LOG_LINE_MAX 2048
#define LOG_FIELDS_MAX 24

/* Settings values and file paths. */
#define SETTING_VALUE_MAX 1024
#define PATH_MAX_POSTAGE 4096

/* RFC 5322 2.1.1: a line is at most 998 characters without its CRLF. Our
 * users' longer lines are broken before the message is signed and sent
 * (Postfix's smtp_line_length_limit); a break goes in a few octets early
 * when that keeps a UTF-8 character whole. */
#define MESSAGE_LINE_MAX 998
#define MESSAGE_LINE_BREAK_SLACK 4

/* Deliverability (dkim.c, spf.c, dmarc.c, srs.c, dns.c). */
/* The header section we parse for DKIM and DMARC; Postfix's
 * header_size_limit is 100 KiB. */
#define MESSAGE_HEADER_MAX (256 * 1024)
#define MESSAGE_HEADER_FIELDS_MAX 1000
/* Mailboxes read from one From:, Sender: or Resent-From: field; a field
 * with more is refused where every author must be checked. */
#define HEADER_AUTHORS_MAX 32
/* One mailbox of an address-list field as we read it: its address has
 * at most 64 + 1 + 255 octets (RFC 5321 4.5.3.1.1 and 4.5.3.1.2), the
 * rest is display name. */
#define HEADER_MAILBOX_MAX 1024
/* The distinct domains of a From: field's authors that DMARC checks, each
 * one policy lookup (two for a subdomain without its own). RFC 7489
 * 6.6.1: with several authors the strictest of their policies counts, so
 * a From naming more is refused under dmarc_reject (dmarc=permerror
 * without it). */
#define DMARC_FROM_DOMAINS_MAX 8
/* DKIM-Signature fields verified per message; signatures made per message. */
#define DKIM_VERIFY_MAX 5
#define DKIM_SIGN_MAX 4
/* A private key file, and a signature or public key, at most. */
#define DKIM_KEY_FILE_MAX 65536
#define DKIM_BLOB_MAX 2048
/* Tags of one DKIM-Signature or key record (RFC 6376 3.2); RFC 6376
 * defines 14, the rest is room for unknown ones, which are ignored. */
#define TAGS_MAX 32
/* Room for the DKIM-Signature fields of one message (DKIM_SIGN_MAX
 * signatures of RSA keys up to 8192 bits). */
#define DKIM_FIELDS_MAX 16384
/* The Authentication-Results field and the quarantine mark. */
#define AUTH_RESULTS_MAX 4096
/* RFC 8301 3.2: RSA keys shorter than 1024 bits must not be trusted. */
#define DKIM_RSA_BITS_MIN 1024
/* RFC 7208 4.6.4: at most 10 DNS-querying terms, 2 void lookups, and 10
 * MX or PTR names per term. */
#define SPF_DNS_TERMS_MAX 10
#define SPF_VOID_LOOKUPS_MAX 2
#define SPF_NAMES_PER_TERM_MAX 10
/* RFC 7208 4.3: a domain name of at most 253 octets. */
#define SPF_DOMAIN_MAX 253
/* Terms of one SPF record; a record with more is a permerror. */
#define SPF_TERMS_MAX 64
/* The exp= of a record kept for a fail's explanation; longer, none. */
#define SPF_EXP_SPEC_MAX 512
/* check_host() depths: each include or redirect is a DNS-querying term,
 * so past SPF_DNS_TERMS_MAX of them the count stops the check. */
#define SPF_DEPTH_MAX (SPF_DNS_TERMS_MAX + 1)
/* Of a domain's SPF explanation (exp=), at most this much (with the
 * terminating NUL) goes into a 550 reply. */
#define SPF_EXPLANATION_SHOWN 161
/* RFC 7208 4.6.4 suggests at least 20 seconds for a whole check; the
 * handler's whole budget for the checks of one message is this. */
#define AUTH_CHECK_TIME_MS (20 * 1000)
/* One DNS query: the resolver's retransmission interval and attempts. */
#define DNS_QUERY_TIMEOUT_S 2
#define DNS_QUERY_ATTEMPTS 2
/* A DNS answer we read (EDNS0 payloads of large TXT sets fit). */
#define DNS_ANSWER_MAX 8192
/* Records of one answer. */
#define DNS_RECORDS_MAX 32
/* The public suffix list (DMARC's organizational domain) is about 230
 * KiB; refuse anything absurdly larger. A name of 253 octets has at
 * most 127 labels. */
#define PSL_FILE_MAX (8 * 1024 * 1024)
#define LABELS_MAX 128
/* SRS: addresses older than this many days are refused (as in libsrs2). */
#define SRS_MAX_AGE_DAYS 21
/* The srs_secret setting's bytes that are used. */
#define SRS_SECRET_MAX 256

/* Mailing lists (shared/list.c, smtp-handler/lists.c). */
/* Enabled members one post is sent to: a list with more gets 550 5.5.3 at
 * RCPT (the handler reads them all at the end of DATA). */
#define LIST_MEMBERS_MAX 5000
/* Copies one message makes through lists, nested lists and archives
 * included; past it the message is refused (550 5.5.3). */
#define LIST_COPIES_MAX 10000
/* A list that is a member of a list that is a member of ...: the depth
 * followed, and the distinct list copies (files) one message makes. */
#define LIST_NESTING_MAX 4
#define LIST_PARTS_MAX 16
/* The subject prefix kept (a longer one is cut). */
#define LIST_PREFIX_MAX 128
/* The DKIM-Signature fields of a list's copy (as DKIM_FIELDS_MAX). */
#define LIST_DKIM_MAX 16384
/* The text of a notice. */
#define NOTICE_TEXT_MAX 4096
/* Where one notice may go: its address may be a forward of ours. */
#define NOTICE_DESTINATIONS_MAX 32
/* Room for the DKIM-Signature fields of a notice. */
#define NOTICE_DKIM_MAX 16384
/* Files of held posts whose time ran out that one list_expire removes
 * at once; any more are left to its sweep of old files. */
#define LIST_EXPIRE_HELD_MAX 256
/* A confirmation token: 26 base32 characters, 130 random bits. */
#define LIST_TOKEN_CHARS 26
/* How long a confirmation of joining or leaving waits (Mailman's
 * pending_request_life), and a held post (the 7 days). */
#define LIST_CONFIRM_SECONDS (3 * 86400)
#define LIST_HOLD_SECONDS (7 * 86400)
/* Replies (confirmations, help) to one address per list and action while
 * earlier ones wait, and confirmations waiting per list: a forged request
 * cannot make a list mail anyone more than this. */
#define LIST_PENDING_PER_ADDRESS_MAX 3
#define LIST_PENDING_PER_LIST_MAX 1000
#define LIST_HELP_SECONDS 86400
/* list_bounce_limit counts the bounces within this window; with no limit
 * at most this many are kept a member. */
#define LIST_BOUNCE_WINDOW_DAYS 30
#define LIST_BOUNCES_KEPT 100
/* Of a bounce (RFC 3464 report) or a request, the bytes after the header
 * section that are read, and the Final-Recipient fields taken from one
 * report. */
#define LIST_BODY_SCAN_MAX (64 * 1024)
#define LIST_DSN_RECIPIENTS_MAX 16
/* A held post travels whole with the owner's notice up to this size;
 * larger, only its header section. */
#define LIST_HELD_ATTACH_MAX (1024 * 1024)
/* The DMARC policy lookups of a post's From domains for "munge from". */
#define LIST_DMARC_TIME_MS (5 * 1000)

/* rspamd (rspamd.c): the whole exchange with rspamd's normal worker for
 * one message (connect, send, verdict) must end within this; past it the
 * message is taken without a verdict (or 451 under rspamd_required). */
#define RSPAMD_TIMEOUT_MS (10 * 1000)
/* Before that, the client's forward-confirmed reverse DNS name for
 * rspamd's Hostname field: PTR names tried, and the time it may take. */
#define RSPAMD_HOSTNAME_TIME_MS (5 * 1000)
#define RSPAMD_PTR_NAMES_MAX 10
/* rspamd's HTTP reply: its status line and fields, and the whole reply
 * with its JSON body (symbols with their options included). */
#define RSPAMD_HTTP_HEAD_MAX (16 * 1024)
#define RSPAMD_REPLY_MAX (256 * 1024)
/* Containers nested in the JSON reply we walk through, the top object
 * included (rspamd's is 4 deep). */
#define RSPAMD_JSON_DEPTH_MAX 16
/* What we keep of the reply: the action's name, the subject rspamd
 * gives (RFC 5322 2.1.1: a line is at most 998 octets; the field is
 * encoded and folded, so it stays within that), and its message for
 * the client, of which at most RSPAMD_MESSAGE_SHOWN octets go into a
 * reply line (RFC 5321 4.5.3.1.5: 512 with the code). */
#define RSPAMD_ACTION_MAX 32
#define RSPAMD_SUBJECT_MAX 512
#define RSPAMD_MESSAGE_MAX 1024
#define RSPAMD_MESSAGE_SHOWN 300
/* The request's head: the envelope's fields, a line per recipient. */
#define RSPAMD_REQUEST_HEAD_MAX (SMTP_RECIPIENTS_MAX * (ADDRESS_PATH_MAX + 16) + 4096)
/* Our fields on top of a message rspamd marked: X-Spam, the score
 * line and the new Subject. */
#define SPAM_FIELDS_MAX (RSPAMD_SUBJECT_MAX * 2 + 512)

/* The queue runner (queue/). */
/* RFC 5321 4.5.3.2.1: wait up to 5 minutes for the 220 greeting. */
#define CLIENT_GREETING_TIMEOUT_MS (5 * 60 * 1000)
/* RFC 5321 4.5.3.2.2-3: MAIL and RCPT replies, 5 minutes; we use the
 * same for EHLO, STARTTLS, AUTH, RSET and QUIT. */
#define CLIENT_COMMAND_TIMEOUT_MS (5 * 60 * 1000)
/* RFC 5321 4.5.3.2.4: the 354 after DATA, 2 minutes. */
#define CLIENT_DATA_INIT_TIMEOUT_MS (2 * 60 * 1000)
/* RFC 5321 4.5.3.2.5: each send of a data block, 3 minutes. */
#define CLIENT_DATA_BLOCK_TIMEOUT_MS (3 * 60 * 1000)
/* RFC 5321 4.5.3.2.6: the reply to the final dot, 10 minutes. */
#define CLIENT_DATA_END_TIMEOUT_MS (10 * 60 * 1000)
/* TCP connect (no RFC value; Postfix's smtp_connect_timeout). */
#define CLIENT_CONNECT_TIMEOUT_MS (30 * 1000)
/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with CRLF. We
 * take up to twice that; a longer line is a protocol error. */
#define CLIENT_REPLY_LINE_MAX 1024
/* Lines in one multi-line reply (EHLO lists are the longest). */
#define CLIENT_REPLY_LINES_MAX 64
/* The reply text kept for logs, the database and bounces. */
#define CLIENT_REPLY_TEXT_MAX 900
/* RFC 5321 4.5.3.1.8: servers must take 100 recipients per transaction;
 * more go in a further transaction on the same connection. */
#define CLIENT_RCPTS_PER_TRANSACTION SMTP_RECIPIENTS_MAX

/* MX hosts kept per domain, and addresses tried per destination in one
 * pass (Postfix's smtp_mx_address_limit is 5). */
#define QUEUE_MX_MAX 16
/* The whole MX lookup of one domain (the resolver retries inside it). */
#define QUEUE_DNS_TIME_MS (30 * 1000)
#define QUEUE_ADDRESSES_MAX 10
/* Destinations served at once by child processes. */
#define QUEUE_PARALLEL_MAX 4
/* Recipients taken in one pass; the rest wait for the next one. */
#define QUEUE_PASS_RECIPIENTS_MAX 10000
/* Passes in one run: a run goes on while mail queued meanwhile is due
 * (systemd does not start it again for a .path event while it runs); a
 * server that never stops queueing ends a run here, and the next queued
 * file starts a new one. */
#define QUEUE_PASSES_MAX 1000
/* Pause before the next pass when one left messages to a handler that
 * still holds their delivery journal (shared/journal.h). */
#define QUEUE_HELD_WAIT_MS 100
/* Passes in a row that may find nothing but held messages: a handler
 * stuck longer than this leaves them to the next run. */
#define QUEUE_HELD_WAITS_MAX 20
/* One delay warning once a message has waited this long. */
#define QUEUE_DELAY_WARNING_SECONDS (4 * 3600)
/* Spool files with no queue row, and stale staging files, are removed
 * when older than this (a crash between link and commit leaves them). */
#define QUEUE_ORPHAN_SECONDS (24 * 3600)
/* How long a delivery's result waits for a database an administrator
 * holds: a "sent" that is not recorded is sent again on the next run. */
#define QUEUE_RECORD_PATIENCE_SECONDS (10 * 60)
/* Original headers quoted in a bounce (text/rfc822-headers). */
#define DSN_HEADERS_MAX (64 * 1024)
/* Where one notice may go: a sender that is a forward of ours. */
#define DSN_DESTINATIONS_MAX 100
/* Recipients put in one bounce; more get a further one. */
#define DSN_RCPTS_MAX 1000
/* Messages handled per step (bounces, warnings, removal) in one pass. */
#define PASS_MESSAGES_STEP 1000
/* Reports recorded in one transaction: each commit of its own would cost
 * a WAL fsync per recipient (a list's 900 copies, 900 fsyncs). Reports
 * wait for it no longer than one wakeup of the pass. */
#define RECORD_BATCH_MAX 256

#endif
