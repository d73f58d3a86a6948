/* Slow sessions make way under load, as Postfix's stress timeouts do.
 *
 * A supervisor gives a service a fixed number of slots (xinetd's
 * instances, a socket unit's MaxConnections=), and a client that sends
 * one byte every few seconds holds one for as long as the line timeout
 * allows (5 minutes per line, RFC 5321 4.5.3.2.7). A session whose line
 * has taken STRESS_SLOW_MS (STRESS_PARTIAL_MS when part of the line came
 * and the rest did not) counts itself as slow (a lock on one byte of
 * spool_dir/slow.lock, which goes when the process does); while more than
 * the setting slow_sessions_max sessions (SMTP and POP3 together) are
 * slow, each of them gives up at its next look (at the same intervals),
 * as on a timeout. Fast sessions never touch the file. */
#ifndef POSTAGE_STRESS_H
#define POSTAGE_STRESS_H

struct io;

/* Arms io: io->slow = stress_slow, io->slow_ms = STRESS_SLOW_MS. Reads
 * nothing: the setting is read when a session first turns slow. */
void stress_watch(struct io *io);

/* io->slow: 1 when this slow session should give up now. */
int stress_slow(struct io *io);

#endif
