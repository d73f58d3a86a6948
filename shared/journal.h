/* The delivery journal: all of a message's copies, or none.
 *
 * A message for two mailboxes, or for a mailbox and the queue, becomes
 * visible in more than one step (a link into each new/, a commit of the
 * queue rows). A crash between two steps would leave some recipients with
 * the message and others without, while the client, which got no 250,
 * sends it again. So before the first step the SMTP handler writes a
 * journal, spool_dir/links/<id>, naming every staged copy (its tmp/ file
 * and its name in new/) and every queue id, fsynced and locked for as long
 * as the handler works on it. A journal that no process holds any more
 * is finished by the queue runner: when every queue id it names is
 * queued, the commit happened, and the copies still in tmp/ are linked
 * into new/; otherwise nothing was accepted, and the staged copies and
 * queue entries go. A handler that fails after the commit marks its
 * journal aborted (<id>.abort) before it takes its copies back, so a
 * crash in the middle of that is finished the same way. */
#ifndef POSTAGE_JOURNAL_H
#define POSTAGE_JOURNAL_H

#include <stddef.h>

#include "maildir.h"

/* Writes and commits the journal for the staged copies and queue ids
 * (fsync of the file and of spool_dir/links), and keeps it locked. Only
 * one at a time per process. 0, or -1 with errno and nothing left. */
int journal_begin(const char *id, const struct maildir_staged *st, size_t nst,
		  const char *const *queue_ids, size_t nids);

/* The copies failed after the commit: from now on a crash takes them all
 * back. 0, or -1 with errno. */
int journal_abort(void);

/* Done (every copy in place, or every one taken back): the journal goes.
 * durable: make its removal survive a crash (needed when it names more
 * than one queue id, since a journal brought back after part of the
 * queue was sent would be read as a half-done commit). */
void journal_end(int durable);

/* Queue runner: finishes every journal no process holds. For each queue
 * id named by a journal still held, or taken back, hold(id, ctx) is
 * called (id NULL: a held journal that cannot be read; hold them all):
 * those rows must not be sent in this pass. Returns how many
 * journals were finished. */
int journal_recover(void (*hold)(const char *id, void *ctx), void *ctx);

/* The reader of journal files, for tests and fuzzing: how many queue ids
 * and copies data names, or -1 when it is not a whole journal. */
int journal_parse(const char *data, size_t len, size_t *nids, size_t *ncopies);

#endif
